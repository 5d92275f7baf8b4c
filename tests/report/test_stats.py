"""Intervals over seeds against hand computations (t quantiles from a printed table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.report.stats import band, mean_interval, ratio_interval


def test_mean_interval_by_hand():
    # 1..5: mean 3, s = sqrt(2.5), t_{0.975,4} = 2.776445 -> 3 +- 2.776445 * sqrt(2.5) / sqrt(5)
    e = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert e.value == 3.0 and e.n == 5
    assert e.lo == pytest.approx(3 - half, abs=1e-5) and e.hi == pytest.approx(3 + half, abs=1e-5)
    # two seeds: t_{0.975,1} = 12.7062; values 10, 14: s = 2.828427, half = 12.7062 * 2
    e = mean_interval([10.0, 14.0])
    assert (e.lo, e.hi) == (
        pytest.approx(12 - 25.4124, abs=1e-3),
        pytest.approx(12 + 25.4124, abs=1e-3),
    )
    # a time cannot be negative: the lower end is raised to the floor, the upper end kept
    e = mean_interval([10.0, 14.0], floor=0.0)
    assert e.lo == 0.0 and e.hi == pytest.approx(12 + 25.4124, abs=1e-3)
    assert mean_interval([7.0]).value == 7.0 and not mean_interval([7.0]).has_interval
    assert mean_interval([]) is None


def test_ratio_interval_by_hand():
    # a = 2, 4 (mean 3, s^2 = 2), b = 1, 1 (no spread): v_a = 2 / (2 * 9) = 1/9, nu = 1,
    # 3 * exp(+- 12.7062 / 3)
    e = ratio_interval([2.0, 4.0], [1.0, 1.0])
    assert e.value == 3.0
    assert e.lo == pytest.approx(3 * math.exp(-12.7062 / 3), rel=1e-4)
    assert e.hi == pytest.approx(3 * math.exp(12.7062 / 3), rel=1e-4)
    # equal log-variances 0.25 and 0.25 with 2 seeds each: nu = 0.25 / 0.125 = 2,
    # t_{0.975,2} = 4.302653, half = 4.302653 * sqrt(0.5); ratio 2 / 4
    e = ratio_interval([1.0, 3.0], [2.0, 6.0])
    half = 4.302653 * math.sqrt(0.5)
    assert e.value == 0.5
    assert e.lo == pytest.approx(0.5 * math.exp(-half), rel=1e-5)
    assert e.hi == pytest.approx(0.5 * math.exp(half), rel=1e-5)
    assert not e.excludes(1.0)  # not significant
    clear = ratio_interval([10.0, 10.5, 9.5, 10.2, 9.8], [1.0, 1.1, 0.9, 1.05, 0.95])
    assert clear.excludes(1.0) and clear.lo > 8  # a tenfold gap with little spread
    assert ratio_interval([], [1.0]) is None and ratio_interval([0.0], [1.0]) is None


def test_band_is_the_interval_of_the_log_mean_on_a_grid():
    # two seeds, one decade apart everywhere: geometric mean sqrt(10) times the lower curve
    x = np.array([0.0, 10.0, 20.0])
    y1 = np.array([1.0, 0.1, 0.01])
    mid, lo, hi = band([x, x], [y1, 10 * y1], np.array([0.0, 5.0, 20.0, 30.0]))
    assert mid[:3] == pytest.approx([math.sqrt(10), 1.0, 10**-1.5])  # log-linear in between
    # log10 values differ by 1: s = sqrt(0.5), half = 12.7062 * sqrt(0.5) / sqrt(2) = 6.3531
    assert lo[0] == pytest.approx(10 ** (0.5 - 6.3531), rel=1e-3)
    assert hi[2] == pytest.approx(10 ** (-1.5 + 6.3531), rel=1e-3)
    assert np.isnan(mid[3])  # past both curves' end
