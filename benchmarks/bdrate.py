"""Bjøntegaard delta rate and delta quality, piecewise cubic (PCHIP) interpolation.

Each curve is a set of (rate, quality) points. BD-rate integrates log-rate as a function of
quality over the quality range both curves cover and reports the mean rate difference in
percent (negative: the test curve needs fewer bits for the same quality). BD-quality
(BD-PSNR for PSNR) integrates quality over the shared log-rate range. Nothing is
extrapolated: curves sharing less than `MIN_SHARED` of the narrower one's range raise
`NoOverlap`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

MIN_SHARED = 0.1
"""Least share of the narrower curve's range (on the integration axis) both must cover."""


class NoOverlap(ValueError):
    """The two curves share (almost) none of the integration axis."""


def _interval_mean(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Mean of the PCHIP interpolant of points (x, y) over [low, high]; x strictly increasing."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("curve points must have distinct values on the integration axis")
    return float(PchipInterpolator(x, y).integrate(low, high)) / (high - low)


def _points(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r, q = np.asarray(rate, dtype=float), np.asarray(quality, dtype=float)
    if r.shape != q.shape or r.ndim != 1 or len(r) < 2:
        raise ValueError("a curve needs at least two (rate, quality) points")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q)) and np.all(r > 0)):
        raise ValueError("rates must be positive and finite, qualities finite")
    return np.log(r), q


def _overlap(a: np.ndarray, b: np.ndarray, axis: str) -> tuple[float, float]:
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    narrower = min(np.ptp(a), np.ptp(b))
    if not (low < high and high - low > MIN_SHARED * narrower):
        raise NoOverlap(f"the two curves do not overlap in {axis}")
    return low, high


Curve = tuple[Sequence[float], Sequence[float]]
"""A codec's (rates, qualities) points."""


def bd_rate(ref: Curve, test: Curve) -> float:
    """Bjøntegaard delta rate of `test` against `ref`, in percent."""
    (ref_log, ref_q), (test_log, test_q) = _points(*ref), _points(*test)
    return (float(np.exp(_delta(ref_q, ref_log, test_q, test_log, "quality"))) - 1) * 100


def bd_quality(ref: Curve, test: Curve) -> float:
    """Bjøntegaard delta quality (BD-PSNR when quality is PSNR) of `test` against `ref`."""
    (ref_log, ref_q), (test_log, test_q) = _points(*ref), _points(*test)
    return _delta(ref_log, ref_q, test_log, test_q, "rate")


def _delta(
    ref_x: np.ndarray, ref_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, axis: str
) -> float:
    """Mean of `test_y - ref_y` over the range of x both curves cover."""
    low, high = _overlap(ref_x, test_x, axis)
    return _interval_mean(test_x, test_y, low, high) - _interval_mean(ref_x, ref_y, low, high)
