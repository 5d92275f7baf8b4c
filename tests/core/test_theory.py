"""Theory against hand-computed values."""

from __future__ import annotations

import pytest

from pipeline.core.theory import optimal_batch, predict


def test_homogeneous_workers_gain_nothing_and_lose_nothing():
    p = predict([2.0] * 4, L=1.0, delta=1.0, sigma2=1.0, eps=0.5)
    assert p["ratio_mb_over_asgd"] == 1.0 and p["H_n"] == 2.0
    # H_m = 2 for every m, so the minimum of 2 (1 + 2/m) is at m = n = 4
    assert p["m_star"] == 4 and p["ratio_asgd_over_opt"] == pytest.approx(1.0)
    assert p["T_MB"] == p["T_ASGD"] == p["T_opt"] == pytest.approx(2 * 2 * (1 + 2 / 4))
    assert p["expected_mean_delay"] == 3 and p["expected_max_delay"] == pytest.approx(3.0)


def test_linear_times_by_hand():
    # taus 1, 2, 3, 4 given unsorted; H_1 = 1, H_2 = 2/1.5 = 4/3, H_3 = 3/(11/6) = 18/11,
    # H_4 = 4/(25/12) = 48/25
    p = predict([3.0, 1.0, 4.0, 2.0], L=2.0, delta=3.0, sigma2=2.0, eps=1.0)
    assert p["H_n"] == pytest.approx(48 / 25)
    assert p["ratio_mb_over_asgd"] == pytest.approx(4 / (48 / 25))
    # r = sigma2/eps = 2: H_m (1 + 2/m) = 3, 8/3 = 2.667, 18/11 * 5/3 = 2.727, 48/25 * 1.5 = 2.88
    assert p["m_star"] == 2
    k = 2.0 * 3.0 / 1.0
    assert p["T_opt"] == pytest.approx(k * 8 / 3)
    assert p["T_ASGD"] == pytest.approx(k * 48 / 25 * 1.5)
    assert p["T_MB"] == pytest.approx(k * 4 * 1.5)
    assert p["ratio_asgd_over_opt"] == pytest.approx((48 / 25 * 1.5) / (8 / 3))
    assert p["expected_max_delay"] == pytest.approx(4 * (25 / 12) - 1)


def test_noise_free_optimum_uses_the_fastest_worker_only():
    p = predict([1.0, 10.0, 10.0], sigma2=0.0, eps=1.0)
    assert p["m_star"] == 1
    assert p["ratio_asgd_over_opt"] == pytest.approx((3 / 1.2) / 1.0)
    assert p["T_MB"] is None  # no L, Delta: only the ratios


def test_without_constants_only_tau_ratios():
    p = predict([1.0, 4.0])
    assert p["ratio_mb_over_asgd"] == pytest.approx(4 / 1.6)
    assert p["m_star"] is None and p["ratio_asgd_over_opt"] is None


def test_optimal_batch():
    assert optimal_batch(10.0, 3.0) == 4 and optimal_batch(0.0, 1.0) == 1
