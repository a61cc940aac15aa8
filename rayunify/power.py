"""Small-sample inference for the findings: Student t quantiles, Holm's adjustment and the minimum detectable
effect. Pure: numpy and the standard library only (no scipy in the runtime dependencies).

The intervals of `rayunify.intervals` are `estimate ± t(df) · SE`, with the degrees of freedom from
Satterthwaite's formula: a contrast whose spread comes mostly from the training seeds has about
`seeds − 1` of them, one whose spread comes from images and texts many more. docs/intervals.md says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by Lentz's continued fraction (converges fast for x < (a+1)/(a+b+2);
    the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) covers the rest)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 400):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * fraction / a


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with `df` degrees of freedom (df = inf: the normal)."""
    if math.isinf(df):
        return _NORMAL.cdf(x)
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + x * x))
    return 1.0 - tail if x > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The x with t_cdf(x, df) = p, by bisection (df may be fractional, as Satterthwaite's is)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if df <= 0 or math.isnan(df):
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(df) or df > 1e7:
        return _NORMAL.inv_cdf(p)
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-9 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def satterthwaite_df(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance estimates, each (variance, its degrees of freedom); a part
    known exactly (df inf) adds none of its own. Infinite when every part is exact."""
    total = sum(v for v, _ in parts)
    spread = sum(v * v / df for v, df in parts if v > 0 and not math.isinf(df))
    return total * total / spread if spread > 0 else math.inf


def two_sided_p(estimate: float, se: float, df: float) -> float:
    if not se > 0:
        return 0.0 if estimate != 0 else 1.0
    return 2.0 * (1.0 - t_cdf(abs(estimate) / se, df))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The confidence level of each contrast's interval under Holm's step-down at family-wise `alpha`: the
    k-th smallest p-value is tested at alpha / (m − k + 1); from the first one not rejected on, every later
    one is held at that step's level. So an interval at its level clears zero exactly when Holm rejects."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels, stopped = [0.0] * m, None
    for rank, index in enumerate(order):
        step = rank if stopped is None else stopped
        if stopped is None and p_values[index] > alpha / (m - rank):
            stopped = step = rank
        levels[index] = 1.0 - alpha / (m - step)
    return levels


@dataclass(frozen=True)
class VarianceComponents:
    """What an interval's variance is made of, in units that carry over to another number of seeds:
    `seed_spread` the variance of ONE seed's figure (its training and its images) as the seeds' spread shows
    it, `images` the part of that the images alone explain, `texts` the variance from which texts the split
    holds (it does not shrink with seeds) with `text_df` degrees of freedom."""

    seed_spread: float
    images: float
    texts: float = 0.0
    text_df: float = math.inf

    def parts(self, seeds: int) -> list[tuple[float, float]]:
        """(variance, degrees of freedom) of the figure pooled over `seeds` seeds: the seeds' spread, never
        less than what the images alone give, with seeds − 1 df (also where the floor holds: a floor chosen by
        looking at the spread must not buy degrees of freedom); and the texts' part."""
        if seeds < 2:
            return [(self.images / seeds, math.inf), (self.texts, self.text_df)]
        return [(max(self.seed_spread, self.images) / seeds, float(seeds - 1)), (self.texts, self.text_df)]

    def standard_error(self, seeds: int) -> float:
        return math.sqrt(sum(v for v, _ in self.parts(seeds)))

    def df(self, seeds: int) -> float:
        return satterthwaite_df(self.parts(seeds))


def power_of(shift: float, df: float, level: float = 0.95) -> float:
    """The chance that a `level` t-interval with `df` degrees of freedom clears zero on the side of a true
    contrast `shift` standard errors from zero: P((Z + shift) / sqrt(X / df) > t) with Z normal and X
    chi-square on df (the noncentral t), integrated over X; at few degrees of freedom the SE's own noise
    makes this well below what the normal quantiles promise."""
    critical = t_quantile(0.5 + level / 2, df)
    if math.isinf(df) or df > 1e4:
        return 1.0 - _NORMAL.cdf(critical - shift)
    top = df + 40.0 * math.sqrt(2.0 * df) + 40.0
    step = top / 4000
    x = (np.arange(4000) + 0.5) * step  # midpoints: the density of one df is infinite at 0
    density = np.exp((df / 2 - 1) * np.log(x) - x / 2 - (df / 2) * math.log(2.0) - math.lgamma(df / 2))
    scaled = critical * np.sqrt(x / df)
    tail = 0.5 * (1.0 + _erf_array((shift - scaled) / math.sqrt(2.0)).astype(np.float64))
    return float(np.sum(tail * density) * step)


_erf_array = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf; 4,000 calls take about a millisecond


def minimum_detectable_effect(
    components: VarianceComponents, seeds: int, level: float = 0.95, power: float = 0.8
) -> float:
    """The smallest true contrast that the `level` interval clears zero for with probability `power`, at the
    standard error and degrees of freedom `seeds` seeds give (the exact noncentral t, not the normal
    approximation (t_{1−α/2} + t_{power}) · SE, which at two degrees of freedom delivers 76%). A one-seed design
    cannot estimate the training spread: its MDE is infinite where that spread exceeds the images'."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if seeds == 1 and components.seed_spread > components.images:
        return math.inf
    df, se = components.df(seeds), components.standard_error(seeds)
    lo, hi = 0.0, 1.0
    while power_of(hi, df, level) < power:
        hi *= 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power_of(mid, df, level) < power else (lo, mid)
    return hi * se
