"""Intervals over seeds: Student t intervals for means, and for ratios of two means a t interval
on the log scale (delta method, Welch-Satterthwaite degrees of freedom).

With k seeds giving values v_1..v_k (mean m, sample standard deviation s):

    mean:   m +- t_{0.975, k-1} * s / sqrt(k)

For the ratio R = m_a / m_b of two methods' means (independent seeds):

    v_a = s_a^2 / (k_a m_a^2),  v_b = s_b^2 / (k_b m_b^2)        (variances of log m_a, log m_b)
    nu  = (v_a + v_b)^2 / (v_a^2 / (k_a - 1) + v_b^2 / (k_b - 1))
    R * exp(+- t_{0.975, nu} * sqrt(v_a + v_b))

A difference is called significant (at 5%) when the ratio's interval excludes 1. Fewer than two
values give no interval (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean (or ratio of means) with its 95% interval; lo/hi are None without one."""

    value: float
    lo: float | None = None
    hi: float | None = None
    n: int = 1

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def excludes(self, x: float) -> bool:
        return self.has_interval and (self.lo > x or self.hi < x)

    def as_dict(self) -> dict:
        return {"mean": self.value, "lo": self.lo, "hi": self.hi, "n": self.n}


def _t(df: float, level: float = LEVEL) -> float:
    return float(_st.t.ppf(0.5 + level / 2, df))


def mean_interval(
    values: Sequence[float],
    level: float = LEVEL,
    floor: float | None = None,
    ceiling: float | None = None,
) -> Estimate | None:
    """The mean with its Student t interval, its ends clipped to ``floor``/``ceiling`` when
    given (for quantities that cannot leave that range); None for no values."""
    v = np.asarray([x for x in values], dtype=np.float64)
    if v.size == 0:
        return None
    m = float(v.mean())
    if v.size < 2:
        return Estimate(m, None, None, 1)
    half = _t(v.size - 1, level) * float(v.std(ddof=1)) / math.sqrt(v.size)
    lo = m - half if floor is None else max(floor, m - half)
    hi = m + half if ceiling is None else min(ceiling, m + half)
    return Estimate(m, lo, hi, int(v.size))


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate | None:
    """mean(a) / mean(b) with a log-scale t interval (module doc); None if either is empty or a
    mean is not positive."""
    a = np.asarray(list(a), dtype=np.float64)
    b = np.asarray(list(b), dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return None
    ma, mb = float(a.mean()), float(b.mean())
    if ma <= 0 or mb <= 0:
        return None
    r = ma / mb
    if a.size < 2 or b.size < 2:
        return Estimate(r, None, None, min(a.size, b.size))
    va = float(a.var(ddof=1)) / (a.size * ma**2)
    vb = float(b.var(ddof=1)) / (b.size * mb**2)
    if va + vb == 0:
        return Estimate(r, r, r, min(a.size, b.size))
    nu = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = _t(nu, level) * math.sqrt(va + vb)
    return Estimate(r, r * math.exp(-half), r * math.exp(half), min(a.size, b.size))


def band(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], grid: np.ndarray, log: bool = True,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Curves (x_j, y_j) of several seeds interpolated onto ``grid`` (log10 of y when ``log``):
    their mean and the t interval of the mean at every grid point, NaN past a curve's end."""
    rows = []
    for x, y in zip(xs, ys, strict=True):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = np.isfinite(y) & (y > 0 if log else True)
        x, y = x[ok], y[ok]
        if x.size == 0:
            rows.append(np.full(grid.shape, np.nan))
            continue
        yy = np.log10(y) if log else y
        row = np.interp(grid, x, yy)
        row[(grid < x[0]) | (grid > x[-1])] = np.nan
        rows.append(row)
    Y = np.vstack(rows)
    ok = np.isfinite(Y)
    k = ok.sum(axis=0)
    Z = np.where(ok, Y, 0.0)
    kk = np.maximum(k, 1)
    m = Z.sum(axis=0) / kk
    ss = (np.where(ok, Y - m, 0.0) ** 2).sum(axis=0)
    s = np.sqrt(ss / np.maximum(k - 1, 1))
    t = np.array([_t(n - 1, level) if n > 1 else np.nan for n in k])
    half = t * s / np.sqrt(kk)
    m[k == 0] = np.nan
    lo, hi = m - half, m + half
    if log:
        return 10**m, 10**lo, 10**hi
    return m, lo, hi
