"""Operating points for any number of classes: per-class offsets added to a model's (calibrated) log
probabilities before the argmax, fitted on the validation split to maximise a metric, or to maximise it
among the offsets that meet constraints (``balanced_acc | recall[melanoma]>=0.9``).

A binary task's decision threshold is the two-class case: predicting class 1 when ``p1 >= t`` is
the offsets ``(0, -logit(t))`` (:func:`threshold_of`, :func:`offsets_of_threshold`).

The fit: the offsets are improved one class at a time (coordinate ascent, the classes a constraint
names first, :data:`ROUNDS` rounds or until no class improves), and shifted so that class 0's is 0
(adding one number to every offset changes nothing); with two classes, class 1's alone is searched.
For one class the exact best offset is found: as its offset grows, sample ``i`` switches to it once
the offset passes ``max_j≠k s_ij - s_ik`` (``s``: the log probabilities plus the other offsets), so
the candidates are the midpoints between those switch points (and one beyond each end); the
confusion matrix at every candidate is a cumulative sum over the samples sorted by switch point, and
each metric is a formula of it (:data:`DECISION_SCORES`). With two classes one such search is the
whole fit: the same partitions as every threshold on ``p1``. Candidates are ranked by constraint
violation first (the sum of the shortfalls), then by the metric; among equal ones the offset nearest
its current value wins (so argmax stays unless another offset does better). Coordinate ascent can
stop short of the best offsets (and of offsets that meet a constraint) when several classes must
move together; a single constrained class, searched first, reaches at least what moving it alone reaches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from focustune.errors import ConfigError
from focustune.metric_table import (DEFAULT_THRESHOLD_METRIC, THRESHOLD_METRICS, Metric,
                                    metric_row)

#: Rounds of coordinate ascent over the classes at most (each class's search is exact).
ROUNDS = 10

# ---------------------------------------------------------------- metrics of confusion matrices


def _recall(c: np.ndarray) -> np.ndarray:
    """[..., K] per-class recall of confusion matrices [..., K, K] (rows: true class); 0 for an absent class."""
    true = c.sum(axis=-1)
    return np.divide(np.diagonal(c, axis1=-2, axis2=-1), true, out=np.zeros(true.shape), where=true > 0)


def _precision(c: np.ndarray) -> np.ndarray:
    """[..., K] per-class precision; 0 for a class never predicted."""
    predicted = c.sum(axis=-2)
    return np.divide(np.diagonal(c, axis1=-2, axis2=-1), predicted, out=np.zeros(predicted.shape),
                     where=predicted > 0)


def _present_mean(values: np.ndarray, c: np.ndarray) -> np.ndarray:
    present = c.sum(axis=-1) > 0
    return (values * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def _worst_present(c: np.ndarray) -> np.ndarray:
    present = c.sum(axis=-1) > 0
    return np.where(present, _recall(c), np.inf).min(axis=-1)


def _macro_f1(c: np.ndarray) -> np.ndarray:
    hits = np.diagonal(c, axis1=-2, axis2=-1)
    total = c.sum(axis=-1) + c.sum(axis=-2)
    return np.divide(2 * hits, total, out=np.zeros(total.shape), where=total > 0).mean(axis=-1)


#: Each thresholdable metric of the table as a formula of confusion matrices [..., K, K], by its name;
#: equal to ``focustune.metrics.COMPUTATIONS`` on the same decisions.
DECISION_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "acc": lambda c: np.trace(c, axis1=-2, axis2=-1) / np.maximum(c.sum(axis=(-2, -1)), 1),
    "balanced_acc": lambda c: _present_mean(_recall(c), c),
    "macro_f1": _macro_f1,
    "worst_class_recall": _worst_present,
}
#: The per-class metrics a constraint can name, as formulas of confusion matrices (-> [..., K]).
CLASS_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"recall": _recall, "precision": _precision}


# ---------------------------------------------------------------- the rule

@dataclass(frozen=True)
class Constraint:
    """``metric[class] >= bound`` (or ``<=``); ``class_name`` None for a scalar metric."""

    metric: str
    class_name: str | None
    at_least: bool
    bound: float

    @property
    def target(self) -> str:
        """What it constrains: ``recall[melanoma]``, ``worst_class_recall``."""
        return f"{self.metric}[{self.class_name}]" if self.class_name is not None else self.metric

    def __str__(self) -> str:
        return f"{self.target}{'>=' if self.at_least else '<='}{self.bound:g}"


@dataclass(frozen=True)
class OperatingRule:
    """What an operating point optimises (``metric``) and must meet (``constraints``)."""

    metric: str
    constraints: tuple[Constraint, ...] = ()

    def __str__(self) -> str:
        return f"{self.metric} | {', '.join(map(str, self.constraints))}" if self.constraints else self.metric

    def check_classes(self, class_names: Sequence[str]) -> None:
        """Refuse (ConfigError) a constraint on a class ``class_names`` lacks."""
        for constraint in self.constraints:
            if constraint.class_name is not None and constraint.class_name not in class_names:
                raise ConfigError(f"operating point {self}: no class {constraint.class_name!r}; the classes are "
                                  f"{', '.join(class_names)}")


_CONSTRAINT = re.compile(r"^\s*(?P<metric>\w+)\s*(?:\[(?P<cls>[^\]]*)\])?\s*(?P<op>>=|<=)\s*(?P<bound>\S+)\s*$")
RULE_FORMS = "METRIC, or METRIC | CONSTRAINT[, CONSTRAINT...] with CONSTRAINT like recall[CLASS]>=0.9"


def parse_rule(text: str, selection_metric: str = DEFAULT_THRESHOLD_METRIC) -> OperatingRule:
    """The rule in ``text`` (:data:`RULE_FORMS`); an empty metric is the selection metric when an operating
    point can change it, else balanced accuracy. Bad text is a ConfigError naming what is wrong."""
    head, _, tail = text.partition("|")
    metric = head.strip() or (selection_metric if selection_metric in THRESHOLD_METRICS else DEFAULT_THRESHOLD_METRIC)
    if metric not in THRESHOLD_METRICS:
        raise ConfigError(f"operating point {text!r}: {metric!r} cannot be optimised by offsets; use one of "
                          f"{', '.join(THRESHOLD_METRICS)}")
    constraints = []
    for part in _split_outside_brackets(tail) if tail.strip() else []:
        constraints.append(_constraint(part, text))
    if "|" in text and not constraints:
        raise ConfigError(f"operating point {text!r}: no constraint after '|' ({RULE_FORMS})")
    return OperatingRule(metric, tuple(constraints))


def _split_outside_brackets(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _constraint(part: str, text: str) -> Constraint:
    found = _CONSTRAINT.match(part)
    if not found:
        raise ConfigError(f"operating point {text!r}: cannot read constraint {part.strip()!r} ({RULE_FORMS})")
    metric, cls = found["metric"], found["cls"]
    try:
        bound = float(found["bound"])
    except ValueError:
        raise ConfigError(f"operating point {text!r}: bound {found['bound']!r} is not a number") from None
    if cls is not None and metric not in CLASS_SCORES:
        raise ConfigError(f"operating point {text!r}: a class constraint takes {' or '.join(CLASS_SCORES)}, "
                          f"not {metric!r}")
    if cls is None and metric not in DECISION_SCORES:
        raise ConfigError(f"operating point {text!r}: {metric!r} is not a metric of the decisions; use "
                          f"{', '.join(DECISION_SCORES)} or {'/'.join(CLASS_SCORES)}[CLASS]")
    if not math.isfinite(bound):
        raise ConfigError(f"operating point {text!r}: bound {bound} is not finite")
    return Constraint(metric, None if cls is None else cls.strip(), found["op"] == ">=", bound)


# ---------------------------------------------------------------- the fit

@dataclass
class OperatingPoint:
    """Fitted offsets (one per class, class 0's is 0) and the validation values they reach."""

    rule: OperatingRule
    offsets: list[float]
    #: The rule's metric and every constrained value, on validation, by name (``recall[melanoma]``).
    values: dict[str, float] = field(default_factory=dict)


def decide(log_probs: np.ndarray, offsets: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """Class indices: the argmax of ``log_probs + offsets`` (the argmax itself without offsets)."""
    scores = np.asarray(log_probs, dtype=np.float64)
    return (scores if offsets is None else scores + np.asarray(offsets, dtype=np.float64)).argmax(axis=1)


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """``log(probs)`` in float64, a probability of 0 floored at the smallest normal float (so that it still
    orders samples and offsets still act on it)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny, None))


def confusion(labels: np.ndarray, decisions: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels * k + decisions, minlength=k * k).reshape(k, k).astype(np.float64)


class _Objective:
    """Ranks confusion matrices [..., K, K] under a rule: (-violation, metric value), higher is better."""

    def __init__(self, rule: OperatingRule, class_names: Sequence[str]):
        self.rule, self.metric = rule, metric_row(rule.metric)
        self.index = {name: i for i, name in enumerate(class_names)}

    def value(self, constraint: Constraint, c: np.ndarray) -> np.ndarray:
        if constraint.class_name is None:
            return DECISION_SCORES[constraint.metric](c)
        return CLASS_SCORES[constraint.metric](c)[..., self.index[constraint.class_name]]

    def violation(self, c: np.ndarray) -> np.ndarray:
        total = np.zeros(c.shape[:-2])
        for constraint in self.rule.constraints:
            value = self.value(constraint, c)
            total += np.maximum(constraint.bound - value if constraint.at_least else value - constraint.bound, 0.0)
        return total

    def score(self, c: np.ndarray) -> np.ndarray:
        return _oriented(self.metric, DECISION_SCORES[self.metric.name](c))

    def values(self, c: np.ndarray) -> dict[str, float]:
        out = {self.metric.name: float(DECISION_SCORES[self.metric.name](c))}
        out.update({constraint.target: float(self.value(constraint, c)) for constraint in self.rule.constraints})
        return out


def _oriented(metric: Metric, scores: np.ndarray) -> np.ndarray:
    return metric.sign * np.nan_to_num(scores, nan=-np.inf * metric.sign)


def _line_search(scores: np.ndarray, labels: np.ndarray, offsets: np.ndarray, k: int,
                 objective: _Objective) -> float:
    """The best offset of class ``k`` with the others fixed (see the module's docstring)."""
    n, classes = scores.shape
    shifted = scores + offsets
    others = np.delete(shifted, k, axis=1)
    rest = np.delete(np.arange(classes), k)[others.argmax(axis=1)]  # each sample's decision when k is not chosen
    switch = others.max(axis=1) - scores[:, k]  # k is chosen once its offset exceeds this
    order = np.argsort(switch, kind="stable")
    switch, ordered_labels, ordered_rest = switch[order], labels[order], rest[order]
    # confusion with k chosen for the first j samples (by switch point), j = 0..n
    change = np.zeros((n, classes, classes))
    change[np.arange(n), ordered_labels, k] += 1
    change[np.arange(n), ordered_labels, ordered_rest] -= 1
    start = confusion(labels, rest, classes)
    cumulative = start + np.concatenate([np.zeros((1, classes, classes)), np.cumsum(change, axis=0)])
    distinct = np.flatnonzero(np.r_[np.diff(switch) > 0, True])  # the last sample of each distinct switch point
    candidates = np.r_[switch[0] - 1.0, (switch[distinct[:-1]] + switch[distinct[:-1] + 1]) / 2, switch[-1] + 1.0]
    matrices = cumulative[np.r_[0, distinct + 1]]
    current = offsets[k]
    candidates = np.r_[candidates, current]
    matrices = np.concatenate([matrices, confusion(labels, decide(scores, offsets), classes)[None]])
    key = np.lexsort((-np.abs(candidates - current), objective.score(matrices), -objective.violation(matrices)))
    return float(candidates[key[-1]])


def _search_order(rule: OperatingRule, class_names: Sequence[str]) -> list[int]:
    """The classes searched in a round: those a constraint names first (so the first round meets it at the
    least cost to the others), then the rest; with two classes, class 1 only (the threshold's one degree)."""
    if len(class_names) == 2:
        return [1]
    named = [class_names.index(c.class_name) for c in rule.constraints if c.class_name is not None]
    return list(dict.fromkeys([*named, *range(len(class_names))]))


def fit_operating_point(log_probs: np.ndarray, labels: np.ndarray, rule: OperatingRule,
                        class_names: Sequence[str]) -> OperatingPoint:
    """The offsets maximising ``rule``'s metric of ``decide(log_probs, offsets)`` against ``labels`` among
    those meeting its constraints (pass the validation split's). None meeting them is a ConfigError
    saying how close the best came."""
    rule.check_classes(class_names)
    scores = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    classes = scores.shape[1]
    objective = _Objective(rule, class_names)
    offsets = np.zeros(classes)
    for _ in range(ROUNDS if classes > 2 else 1):
        before = offsets.copy()
        for k in _search_order(rule, class_names):
            offsets[k] = _line_search(scores, labels, offsets, k, objective)
        if np.array_equal(before, offsets):
            break
    offsets -= offsets[0]
    reached = confusion(labels, decide(scores, offsets), classes)
    values = objective.values(reached)
    if objective.violation(reached) > 0:
        shown = ", ".join(f"{c.target} {values[c.target]:.4f}" for c in rule.constraints)
        raise ConfigError(f"operating point {rule}: the search found no per-class offsets that meet it on the "
                          f"validation split ({len(labels)} samples; the closest reach {shown}); relax the "
                          "constraint")
    return OperatingPoint(rule, [float(o) for o in offsets], values)


# ---------------------------------------------------------------- the two-class case

def threshold_of(offsets: Sequence[float]) -> float:
    """The threshold on ``p1`` that two-class ``offsets`` amount to: class 1 when ``p1 >= t``."""
    return 1.0 / (1.0 + math.exp(offsets[1] - offsets[0]))


def offsets_of_threshold(threshold: float) -> list[float]:
    """Two-class offsets deciding as the threshold ``threshold`` on ``p1`` does."""
    return [0.0, -math.log(threshold / (1.0 - threshold))]


def calibrate_threshold(positive_probs: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, float]:
    """(threshold on ``p1``, validation score): a binary task's operating point for ``metric``, as a threshold."""
    p = np.asarray(positive_probs, dtype=np.float64)
    point = fit_operating_point(log_probabilities(np.stack([1 - p, p], axis=1)), labels, parse_rule(metric),
                                ["0", "1"])
    return threshold_of(point.offsets), point.values[metric]
