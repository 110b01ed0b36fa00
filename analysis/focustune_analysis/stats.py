"""Statistics on small samples of seeds and datasets, from scipy.stats, with their limits stated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values with its standard error and t-based confidence interval (NaN for n < 2)."""

    n: int
    mean: float
    se: float
    low: float
    high: float


def estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    se = float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Estimate(n, mean, se, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """``a - b`` over paired seeds: the mean difference (effect size) with its CI, the paired
    t-test and the Wilcoxon signed-rank test (two-sided; NaN where a test is undefined)."""

    difference: Estimate
    t_p: float
    wilcoxon_p: float

    @property
    def n(self) -> int:
        return self.difference.n


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    difference = estimate(diff, confidence)
    t_p = w_p = math.nan
    if len(diff) >= 2:
        if np.allclose(diff, diff[0], rtol=0, atol=1e-12):  # no spread: t undefined, ranks all tied
            t_p = 1.0 if abs(diff[0]) <= 1e-12 else math.nan
            w_p = 1.0 if abs(diff[0]) <= 1e-12 else wilcoxon_floor(len(diff))
        else:
            t_p = float(stats.ttest_rel(a, b).pvalue)
            w_p = _wilcoxon(diff)
    return PairedTest(difference, t_p, w_p)


def _wilcoxon(diff: np.ndarray) -> float:
    if not np.any(np.abs(diff) > 1e-12):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with n pairs."""
    return min(1.0, 2.0 / 2.0 ** n) if n > 0 else 1.0


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def small_sample_note(n: int, alpha: float = 0.05) -> str:
    """What ``n`` paired seeds can and cannot show (empty when nothing needs saying)."""
    if n == 0:
        return "no paired seeds: no test"
    if n == 1:
        return "n=1: no test possible"
    floor = wilcoxon_floor(n)
    if floor >= alpha:
        return (f"n={n} seeds: Wilcoxon cannot reach p<{alpha:g} (smallest possible p={floor:.3g}); the t-test "
                "leans on normally distributed differences")
    if n < 10:
        return f"n={n} seeds: a small sample; the t-test leans on normally distributed differences"
    return ""


@dataclass(frozen=True)
class Ranking:
    """Methods ranked within each dataset (1 = best), averaged across datasets, with the Friedman
    test and the Nemenyi critical difference (two methods whose average ranks differ by less than
    ``critical_difference`` are not significantly different)."""

    scores: pd.DataFrame  # datasets x methods
    ranks: pd.DataFrame
    average_rank: pd.Series
    friedman_p: float
    critical_difference: float
    note: str

    @property
    def groups(self) -> list[list[str]]:
        """Maximal runs of methods, in average-rank order, whose average ranks differ by at most the
        critical difference (not significantly different): the bars of a critical-difference
        diagram; empty without a critical difference."""
        if not math.isfinite(self.critical_difference):
            return []
        methods, ranks = list(self.average_rank.index), self.average_rank.to_numpy()
        groups: list[list[str]] = []
        for start in range(len(methods)):
            end = start
            while end + 1 < len(methods) and ranks[end + 1] - ranks[start] <= self.critical_difference:
                end += 1
            if end > start and (not groups or methods[end] != groups[-1][-1]):  # not inside the previous bar
                groups.append(methods[start:end + 1])
        return groups


def friedman_nemenyi(scores: pd.DataFrame, alpha: float = 0.05) -> Ranking:
    """``scores``: one row per dataset, one column per method (higher is better)."""
    scores = scores.dropna(axis=1, how="any")
    ranks = scores.rank(axis=1, ascending=False)
    average = ranks.mean().sort_values()
    n_datasets, k = scores.shape
    notes = []
    friedman_p = critical = math.nan
    if k >= 3 and n_datasets >= 2:
        friedman_p = float(stats.friedmanchisquare(*(scores[c] for c in scores.columns)).pvalue)
        q = float(stats.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
        critical = q * math.sqrt(k * (k + 1) / (6 * n_datasets))
        if n_datasets < 10:
            notes.append(f"N={n_datasets} datasets: the Friedman chi-square approximation is rough and the test "
                         "has little power")
    else:
        notes.append("the Friedman test needs at least 3 methods and 2 datasets")
    return Ranking(scores, ranks, average, friedman_p, critical, "; ".join(notes))
