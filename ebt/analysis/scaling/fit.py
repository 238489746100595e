"""Scaling-law fits with bootstrap intervals over seeds, and the compute frontier.

* **Power law** ``L = a X^-b``: ordinary least squares of ``log L`` on ``log X`` (the form of Kaplan et al. 2020, one
  variable at a time).
* **Saturating law** ``L = a X^-b + c`` (``c``: the loss no size reaches; Hoffmann et al. 2022's form in one
  variable), fitted only on >= :data:`MIN_SATURATING` distinct X: the best ``c`` of a grid over ``[0, min L)`` (each
  with the log-log fit of ``L - c``; best = least squares on ``L``), refined by ``scipy.optimize.curve_fit``
  (Levenberg-Marquardt, least squares on ``L`` itself; X scaled by its geometric mean so the problem is well
  conditioned). Where the refinement fails or leaves ``a > 0``, ``b >= 0``, ``0 <= c < min L``, the grid's answer
  stands.
* **Points**: one series per size (one configuration of one objective) holds, per seed, the metric at each key (the
  final value: one key; a val curve: one key per logged step) and X at each key. The fitted points are the means over
  the chosen seeds; for ``frontier=True`` the points of every size are pooled and reduced to their lower envelope
  (:func:`frontier`).
* **Bootstrap**: each draw resamples, at each size, its seed replicates with replacement and refits. The draw picks
  seed *labels* shared by all objectives (seed 0 of the EBT goes with seed 0 of the predictor at the same
  configuration), so two objectives' exponents from one draw are paired and their ratio per draw gives the ratio's
  interval. Intervals are the 2.5 and 97.5 percentiles over the draws. One seed per size gives no interval (NaN).
  Deviation from the plain percentile bootstrap: a mean of ``n`` resampled seeds varies ``(n - 1) / n`` times as much
  as the mean of ``n`` fresh seeds, which makes 3-seed intervals too short; each drawn mean's deviation from the mean
  of all seeds is scaled by ``sqrt(n / (n - 1))`` (the correction of Davison & Hinkley's modified residuals, 1997).
  Even so, 3 seeds give intervals that cover the truth less often than 95 %: 0.87-0.93 of 30 synthetic grids in
  ``tests/test_scaling.py`` (which asserts >= 0.75).
"""

import contextlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_POINTS = 3  # distinct X a power law needs
MIN_SATURATING = 4  # distinct X the saturating law needs (3 parameters)
LEVEL = 0.95


@dataclass
class Series:
    """One size of one objective: ``x[key]`` and, per seed, ``values[seed][key]`` (key: a logged step, or 0)."""

    label: str
    x: dict[int, float]
    values: dict[int, dict[int, float]] = field(default_factory=dict)


@dataclass
class Fit:
    """``L = a X^-b (+ c)``; ``c`` is None for the power law."""

    a: float
    b: float
    c: float | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.a * np.power(x, -self.b) + (self.c or 0.0)


def seed_means(series: Series, seeds: Sequence[int] | None = None, *,
               positive: bool = True) -> list[tuple[float, float]]:
    """``(X, mean over seeds)`` at every key all seeds logged; ``seeds``: a bootstrap draw (a seed may come twice),
    whose mean's deviation from the mean of all ``n`` seeds is scaled by ``sqrt(n / (n - 1))`` (module docstring).
    ``positive`` (a loss): a scaled mean that falls to 0 or below keeps the unscaled one, so a log stays defined."""
    every = sorted(series.values)
    drawn = every if seeds is None else list(seeds)
    keys = sorted(set.intersection(*(set(series.values[s]) for s in every)))
    inflate = math.sqrt(len(every) / (len(every) - 1)) if seeds is not None and len(every) > 1 else 1.0
    points = []
    for k in keys:
        full = float(np.mean([series.values[s][k] for s in every]))
        mean = float(np.mean([series.values[s][k] for s in drawn]))
        value = full + inflate * (mean - full)
        points.append((series.x[k], value if value > 0 or not positive else mean))
    return points


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower envelope: a point stays when every point at X' <= X has a higher L (the best loss at each budget)."""
    best, kept = math.inf, []
    for x, y in sorted(points):
        if y < best:
            kept.append((x, y))
            best = y
    return kept


def fit_points(sizes: Sequence[Series], draw: dict[str, list[int]] | None = None, *, pooled: bool = False,
               x_range: tuple[float | None, float | None] = (None, None)) -> list[tuple[float, float]]:
    """The points a fit sees: seed means per size (``draw[label]``: the seeds to average, default all of them), the
    frontier of all sizes' points when ``pooled``, then only X inside ``x_range`` (either end None: open)."""
    points = [p for s in sizes for p in seed_means(s, draw[s.label] if draw else None)]
    if pooled:
        points = frontier(points)
    low, high = x_range
    return sorted((x, y) for x, y in points if (low is None or x >= low) and (high is None or x <= high))


def power_law(points: Sequence[tuple[float, float]]) -> Fit:
    """Least squares of ``log L`` on ``log X``."""
    x, y = np.array(points, dtype=float).T
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return Fit(a=float(math.exp(intercept)), b=float(-slope))


def saturating_law(points: Sequence[tuple[float, float]], grid: int = 64) -> Fit | None:
    """``L = a X^-b + c`` (module docstring); None for fewer than :data:`MIN_SATURATING` distinct X."""
    from scipy.optimize import curve_fit

    x, y = np.array(points, dtype=float).T
    if len(set(x.tolist())) < MIN_SATURATING:
        return None
    scale = float(np.exp(np.log(x).mean()))
    u = np.log(x / scale)
    cs = np.linspace(0.0, y.min(), grid, endpoint=False)[:, None]  # (grid, 1)
    logs = np.log(y[None, :] - cs)  # (grid, points): the log-log fit of L - c for every c at once
    slopes = ((u - u.mean()) * (logs - logs.mean(1, keepdims=True))).sum(1) / ((u - u.mean()) ** 2).sum()
    amps = np.exp(logs.mean(1) - slopes * u.mean())
    bs = np.maximum(-slopes, 0.0)
    errors = ((amps[:, None] * np.exp(-bs[:, None] * u[None, :]) + cs - y[None, :]) ** 2).sum(1)
    best = int(np.argmin(errors))
    a, b, c = float(amps[best]), float(bs[best]), float(cs[best, 0])
    # refined by Levenberg-Marquardt from there; a fit that fails or leaves the bounds keeps the grid's answer
    with contextlib.suppress(RuntimeError, ValueError, FloatingPointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow on the way, or no covariance estimate: judged by the bounds below
        fitted, _ = curve_fit(lambda t, a, b, c: a * np.exp(-b * t) + c, u, y, p0=(a, b, c), method="lm",
                              maxfev=2000)
        if fitted[0] > 0 and fitted[1] >= 0 and 0 <= fitted[2] < y.min():
            a, b, c = (float(v) for v in fitted)
    return Fit(a=float(a * scale ** b), b=float(b), c=float(c))


def distinct_x(points: Sequence[tuple[float, float]]) -> int:
    return len({x for x, _ in points})


@dataclass
class Fitted:
    """One objective's fits on all seeds, and the same fits in each bootstrap draw (None where a draw had too few
    points)."""

    points: list[tuple[float, float]]
    power: Fit
    saturating: Fit | None
    power_draws: list[Fit | None]
    saturating_draws: list[Fit | None]
    max_seeds: int  # most seeds at one size: 1 means no interval


def paired_draws(objectives: dict[str, list[Series]], draws: int, seed: int) -> list[dict[str, dict[str, list[int]]]]:
    """Per draw and objective, ``{size label: seeds}`` resampled with replacement; labels shared by objectives draw
    the same seed labels (paired), an objective lacking every drawn seed resamples its own."""
    rng = np.random.default_rng(seed)
    labels = sorted({s.label for sizes in objectives.values() for s in sizes})
    owners = {label: {name: sorted(s.values) for name, sizes in objectives.items() for s in sizes if s.label == label}
              for label in labels}  # {size label: {objective: its seeds}}
    pools = {label: sorted({seed for seeds in owners[label].values() for seed in seeds}) for label in labels}
    out = []
    for _ in range(draws):
        per_objective: dict[str, dict[str, list[int]]] = {name: {} for name in objectives}
        for label, pool in pools.items():
            chosen = [int(v) for v in rng.choice(pool, size=len(pool), replace=True)]
            for name, seeds in owners[label].items():
                mine = [s for s in chosen if s in seeds]
                per_objective[name][label] = mine or [int(v) for v in rng.choice(seeds, size=len(seeds))]
        out.append(per_objective)
    return out


def fit_objectives(objectives: dict[str, list[Series]], points: dict[str, list[tuple[float, float]]], *,
                   pooled: bool = False, x_range: tuple[float | None, float | None] = (None, None), draws: int = 1000,
                   seed: int = 0) -> dict[str, Fitted]:
    """Every objective's power and saturating fits on ``points`` (its :func:`fit_points` over all seeds) and the same
    fits in each bootstrap draw (fixed ``seed``: reproducible)."""
    fitted = {name: Fitted(points[name], power_law(points[name]), saturating_law(points[name]), [], [],
                           max(len(s.values) for s in sizes)) for name, sizes in objectives.items()}
    for draw in paired_draws(objectives, draws, seed):
        for name, sizes in objectives.items():
            points = fit_points(sizes, draw[name], pooled=pooled, x_range=x_range)
            enough = distinct_x(points) >= MIN_POINTS
            fitted[name].power_draws.append(power_law(points) if enough else None)
            fitted[name].saturating_draws.append(saturating_law(points) if enough else None)
    return fitted


def interval(values: Sequence[float | None], level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of the finite ``values`` (NaN, NaN for fewer than two)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return math.nan, math.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def exponents(fits: Sequence[Fit | None]) -> list[float | None]:
    return [f.b if f is not None else None for f in fits]


def ratios(numerator: Sequence[Fit | None], denominator: Sequence[Fit | None]) -> list[float | None]:
    """``b_num / b_den`` per paired draw (None where either is missing or the denominator is 0)."""
    return [n.b / d.b if n is not None and d is not None and d.b != 0 else None
            for n, d in zip(numerator, denominator, strict=True)]
