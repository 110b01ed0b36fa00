"""Statistics on small samples of seeds and datasets, from scipy.stats, with their limits stated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, stats


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


def within(e: Estimate, bounds: tuple[float, float] | None) -> Estimate:
    """``e`` with its interval dropped (NaN) where the t-interval leaves ``bounds`` (None: unbounded): at
    that n the normal approximation cannot describe a bounded quantity, so no interval is stated."""
    if bounds is None or math.isnan(e.low) or (bounds[0] <= e.low and e.high <= bounds[1]):
        return e
    return Estimate(e.n, e.mean, e.se, math.nan, math.nan)


#: The text reports print where :func:`within` dropped an interval.
NO_INTERVAL = "n too small for an interval"


@dataclass(frozen=True)
class PairedTest:
    """``a - b`` over paired seeds: the mean difference (effect size) with its CI, the p-value of the
    paired test and the Wilcoxon signed-rank test (two-sided; NaN only below two pairs).

    ``t_p`` is the paired t-test's p, except where the differences have no spread (``exact``): the
    t statistic is undefined there, and ``t_p`` is the exact sign-flip permutation test's p (2 / 2^n
    for identical non-zero differences, 1 for all zero) and the interval is that test's inverted
    (every value when even the most extreme sign pattern is not significant, else the difference
    itself)."""

    difference: Estimate
    t_p: float
    wilcoxon_p: float
    exact: bool = False

    @property
    def n(self) -> int:
        return self.difference.n

    @property
    def test(self) -> str:
        return "exact sign-flip (no spread)" if self.exact else "paired t"


#: Differences closer than this are treated as equal (float noise of metrics computed from counts).
TIE = 1e-12


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = a - b
    difference = estimate(diff, confidence)
    if len(diff) < 2:
        return PairedTest(difference, math.nan, math.nan)
    if np.allclose(diff, diff[0], rtol=0, atol=TIE):  # no spread: t undefined, ranks all tied
        p = sign_flip_p(diff)
        bounds = (difference.mean, difference.mean) if wilcoxon_floor(len(diff)) < 1 - confidence \
            else (-math.inf, math.inf)
        return PairedTest(Estimate(difference.n, difference.mean, 0.0, *bounds), p, p, exact=True)
    return PairedTest(difference, float(stats.ttest_rel(a, b).pvalue), _wilcoxon(diff))


def sign_flip_p(diff: Sequence[float]) -> float:
    """Two-sided p of the exact sign-flip permutation test of a zero mean difference (every sign
    pattern, up to 2^20 of them; scipy's ``permutation_test``); 1 when every difference is zero."""
    x = np.asarray(diff, dtype=float)
    if not np.any(np.abs(x) > TIE):
        return 1.0
    result = stats.permutation_test((x,), np.mean, permutation_type="samples", n_resamples=np.inf
                                    if len(x) <= 20 else 100_000, alternative="two-sided", random_state=0)
    return float(result.pvalue)


def _wilcoxon(diff: np.ndarray) -> float:
    if not np.any(np.abs(diff) > TIE):
        return 1.0
    return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank (or sign-flip) test can give with n pairs."""
    return min(1.0, 2.0 / 2.0 ** n) if n > 0 else 1.0


#: The power a minimal detectable effect is stated at.
POWER = 0.8


def minimal_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects with ``power``
    from ``n`` pairs whose differences have standard deviation ``sd`` (noncentral t; NaN below 2)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:  # the exact sign-flip test decides: any effect once 2/2^n < alpha, none before
        return 0.0 if wilcoxon_floor(n) < alpha else math.inf
    df, crit = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(effect: float) -> float:
        shift = effect * math.sqrt(n) / sd
        return float(stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift)) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high))


def seeds_to_resolve(sd: float, effect: float | None, confidence: float = 0.95, most: int = 10_000) -> int | None:
    """The fewest pairs whose expected t-interval (differences of standard deviation ``sd``) is
    narrower than ``effect``: an interval that narrow cannot hold both 0 and the effect, so the
    comparison is decided either way (None: no effect, no spread estimate, or more than ``most``)."""
    if effect is None or not math.isfinite(sd) or effect <= 0:
        return None
    if sd == 0:  # the exact sign-flip test's interval is bounded from 2/2^n < 1 - confidence on
        return next(n for n in range(2, 64) if wilcoxon_floor(n) < 1 - confidence)
    quantile = 0.5 + confidence / 2
    n = next((n for n in range(2, most + 1) if float(stats.t.ppf(quantile, n - 1)) * sd / math.sqrt(n) < effect / 2),
             None)
    return n


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
