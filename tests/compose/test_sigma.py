"""sigma^2 at the solution x* (exact for least squares and the noisy quadratic) and the
resolution of Rennala's S and Ringmaster's R from sigma^2 / eps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from models import datasets
from models.objectives import NoisyQuadratic, Quadratic
from pipeline.compose.build import build_experiment
from tests.conftest import compose_cfg


def _brute_force_sigma2(X: np.ndarray, y: np.ndarray, b: int) -> float:
    """E||g_B(x*) - grad F(x*)||^2 over every subset B of b rows, all equally likely (a
    minibatch drawn without replacement), by enumeration."""
    x_star = np.linalg.lstsq(X, y, rcond=None)[0]
    full = X.T @ (X @ x_star - y) / len(y)
    devs = []
    for rows in itertools.combinations(range(len(y)), b):
        Xb, yb = X[list(rows)], y[list(rows)]
        g = Xb.T @ (Xb @ x_star - yb) / b
        devs.append(float(np.sum((g - full) ** 2)))
    return float(np.mean(devs))


@pytest.mark.parametrize("b", [1, 2, 3, 6])
def test_least_squares_sigma2_at_the_solution_matches_enumeration(b):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6, 2))
    y = X @ np.array([1.0, -2.0]) + 0.5 * rng.normal(size=6)  # residuals at x* are not zero
    obj = Quadratic(X, y)
    c = obj.theory_constants(b)
    assert c["sigma2"] == pytest.approx(_brute_force_sigma2(X, y, b), rel=1e-10, abs=1e-15)
    if b == 6:
        assert c["sigma2"] == 0.0  # all rows: the full gradient, no noise
    # the bound at x_0 = 0 (the old value) is far larger: sigma^2 is taken at x*, not at x_0
    g0 = X * (-y)[:, None]
    at_x0 = float(((g0 - g0.mean(0)) ** 2).sum(1).mean()) / b * (6 - b) / 5
    assert b == 6 or at_x0 > 2 * c["sigma2"]
    assert c["delta"] == pytest.approx(
        obj.loss(torch.zeros(2, dtype=torch.float64)) - obj.optimum()
    )


def test_noisy_quadratic_sigma2_is_dim_times_sigma_squared():
    obj = NoisyQuadratic(dim=10, sigma=0.3)
    assert obj.theory_constants(None)["sigma2"] == pytest.approx(0.9)
    # and it is the variance of a job's gradient at x* = 1: E||sigma z||^2, by sampling
    sampler = obj.sampler(None, None, np.random.default_rng(0))
    x_star = torch.ones(10, dtype=torch.float64)
    dev = torch.stack([obj.grad(x_star, sampler()) for _ in range(20000)])
    assert float((dev**2).sum(1).mean()) == pytest.approx(0.9, rel=0.03)


def _rule(*overrides):
    return build_experiment(compose_cfg(*overrides, "tracking=none")).rule.describe()


def test_S_and_R_resolve_to_ceil_sigma2_over_eps():
    noisy = ["experiment=scaling_sqrt", "topology.n_workers=100"]  # sigma^2 = 0.9, eps = 0.02
    assert _rule(*noisy, "optimizer=rennala")["batch"] == 45
    assert _rule(*noisy, "optimizer=ringmaster")["threshold"] == 45
    assert _rule(*noisy, "optimizer=rennala", "target=0.2")["batch"] == math.ceil(0.9 / 0.2)
    assert _rule(*noisy, "optimizer=rennala", "optimizer.sigma2=0.1")["batch"] == 5  # override
    assert _rule(*noisy, "optimizer=ringmaster", "optimizer.threshold=7")["threshold"] == 7
    assert _rule(*noisy, "optimizer=rennala", "target=null")["batch"] == 100  # no eps: n
    # ceil(sigma^2/eps) is not capped at n
    assert _rule(*noisy, "optimizer=rennala", "topology.n_workers=10")["batch"] == 45
    # the n setting through an interpolation, as the study passes it
    assert (
        _rule(*noisy, "optimizer=rennala", "optimizer.batch=${topology.n_workers}")["batch"] == 100
    )


def test_paper_problem_gets_S_and_R_one(tmp_path):
    """sigma^2 at x* of the paper's least squares is ~1e-13 (b = 1e-5 noise): S = R =
    ceil(sigma^2/eps) = 1."""
    ds = compose_cfg().dataset
    path = tmp_path / "lstsq_paper.npz"
    datasets.build("lstsq_paper", path, seed=ds.seed, **dict(ds.params or {}))
    cfg = compose_cfg("optimizer=rennala", "target=5e-3", f"dataset.path={path}", "tracking=none")
    exp = build_experiment(cfg)
    assert exp.objective.theory_constants(256)["sigma2"] < 1e-9
    assert exp.rule.describe()["batch"] == 1
