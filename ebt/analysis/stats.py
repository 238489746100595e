"""Summaries over seeds: the mean and the half-width of its 95 % t-interval (what results tables show)."""

import math
import statistics
from collections.abc import Sequence

from scipy import stats


def t_interval(values: Sequence[float], level: float = 0.95) -> float:
    """The half-width of the ``level`` t-interval of the mean of ``values`` (NaN for fewer than 2)."""
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """``(mean, half-width of its t-interval)`` of the finite ``values`` (NaN, NaN when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), t_interval(finite, level)
