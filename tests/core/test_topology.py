"""Worker-time models (docs/methods.md, section 4): every topology's mean times against values
computed by hand, and every noise model's draws through JobTimes.next and JobTimes.drawer
against the model's statistics: per-worker means (and the gamma shape through the variance),
each worker's share of completions per unit time, the straggler visible in the draws; and the
streams: distinct per worker and seed, identical for the same (seed, worker) whichever way and
in whatever order they are asked.

Statistical tolerances are 6 standard errors of the estimate, with fixed seeds (a correct
model fails one with probability about 2e-9: never in practice)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.topology import NOISES, JobTimes, mean_times

Z = 6.0  # standard errors allowed
DRAWS = 20_000  # jobs per worker for the sample statistics


# -- mean times, by hand ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, n, kw, expected",
    [
        ("homogeneous", 3, dict(tau=2.5), [2.5, 2.5, 2.5]),
        ("linear", 4, dict(tau=2.0), [2.0, 4.0, 6.0, 8.0]),
        ("linear", 1, dict(), [1.0]),
        ("sqrt", 4, dict(tau=3.0), [3.0, 3.0 * 2**0.5, 3.0 * 3**0.5, 6.0]),
        # the factor applies to the LAST `stragglers` workers
        ("straggler", 5, dict(tau=2.0, stragglers=2, factor=10.0), [2.0, 2.0, 2.0, 20.0, 20.0]),
        ("straggler", 4, dict(), [1.0, 1.0, 1.0, 100.0]),  # defaults: one, 100 times slower
        ("straggler", 3, dict(tau=0.5, stragglers=0), [0.5, 0.5, 0.5]),
        ("straggler", 2, dict(stragglers=2, factor=3.0), [3.0, 3.0]),
        # the first round(fraction_fast * n) workers are fast
        ("two_class", 4, dict(), [1.0, 1.0, 10.0, 10.0]),  # defaults 0.5, 1, 10
        ("two_class", 7, dict(fraction_fast=0.5, tau_fast=2.0, tau_slow=5.0),
         [2.0] * 4 + [5.0] * 3),  # 3.5 -> 4
        ("two_class", 6, dict(fraction_fast=0.4), [1.0] * 2 + [10.0] * 4),  # 2.4 -> 2
        ("two_class", 3, dict(fraction_fast=0.9), [1.0] * 3),  # 2.7 -> 3
        ("two_class", 5, dict(fraction_fast=0.0, tau_slow=4.0), [4.0] * 5),
        ("two_class", 5, dict(fraction_fast=1.0), [1.0] * 5),
        ("custom", 4, dict(times=[1.0, 1.5, 2.0, 3.0]), [1.0, 1.5, 2.0, 3.0]),
        ("custom", 2, dict(times=(0.25, 7)), [0.25, 7.0]),
    ],
)  # fmt: skip
def test_mean_times_by_hand(model, n, kw, expected):
    got = mean_times(model, n, **kw)
    assert got.shape == (n,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "model, n, kw, match",
    [
        ("linear", 0, dict(), "n_workers must be >= 1"),
        ("nope", 3, dict(), "unknown topology"),
        ("straggler", 3, dict(stragglers=4), "stragglers must be in"),
        ("two_class", 3, dict(fraction_fast=1.5), "fraction_fast must be in"),
        ("custom", 3, dict(), "needs topology.times"),
        ("custom", 3, dict(times=[1.0, 2.0]), "has 2 entries"),
        ("custom", 2, dict(times=[1.0, 0.0]), "positive and finite"),
        ("homogeneous", 2, dict(tau=-1.0), "positive and finite"),
        ("sqrt", 2, dict(tau=math.inf), "positive and finite"),
    ],
)
def test_bad_topologies_are_refused(model, n, kw, match):
    with pytest.raises(ValueError, match=match):
        mean_times(model, n, **kw)


# -- draws --------------------------------------------------------------------------------------

TAUS = mean_times("linear", 4, 0.5)  # [0.5, 1.0, 1.5, 2.0]


def moments(noise, tau, shape=2.0, jitter=0.5):
    """(mean, variance) of one job's duration under ``noise`` (docs/methods.md section 4)."""
    if noise == "none":
        return tau, 0.0
    if noise == "exponential":
        return tau, tau**2
    if noise == "gamma":
        return tau, tau**2 / shape
    s = jitter * tau  # halfnormal: tau + |N(0, s^2)|
    return tau + s * math.sqrt(2 / math.pi), s**2 * (1 - 2 / math.pi)


def draws_per_worker(times: JobTimes, count: int, how: str) -> np.ndarray:
    """``count`` draws of every worker, (n, count), asked through ``next`` or ``drawer``."""
    n = times.n_workers
    if how == "next":
        return np.array([[times.next(w) for _ in range(count)] for w in range(n)])
    draw = times.drawer()
    return np.array([[draw(w) for _ in range(count)] for w in range(n)])


KW = {"gamma": dict(gamma_shape=2.0), "halfnormal": dict(jitter=0.5)}


@pytest.mark.parametrize("how", ["next", "drawer"])
@pytest.mark.parametrize("noise", NOISES)
def test_per_worker_means_are_the_models(noise, how):
    times = JobTimes(TAUS, noise, seed=11, **KW.get(noise, {}))
    d = draws_per_worker(times, DRAWS, how)
    assert (d > 0).all() and np.isfinite(d).all()
    for w, tau in enumerate(TAUS):
        mean, var = moments(noise, tau)
        if noise == "none":
            assert (d[w] == tau).all()
            continue
        se = math.sqrt(var / DRAWS)
        assert abs(d[w].mean() - mean) < Z * se, (w, d[w].mean(), mean)
        if noise == "halfnormal":
            assert d[w].min() >= tau  # tau plus a non-negative jitter


@pytest.mark.parametrize("shape", [0.5, 2.0, 8.0])
def test_gamma_variance_is_tau_squared_over_the_shape(shape):
    """The shape k shows in the variance tau^2 / k (mean tau whatever k)."""
    times = JobTimes(TAUS, "gamma", seed=5, gamma_shape=shape)
    d = draws_per_worker(times, DRAWS, "drawer")
    for w, tau in enumerate(TAUS):
        var = tau**2 / shape
        assert abs(d[w].mean() - tau) < Z * math.sqrt(var / DRAWS)
        # the sample variance's standard error: sqrt((mu4 - var^2) / N), mu4 = var^2 (3 + 6/k)
        se = var * math.sqrt((2 + 6 / shape) / DRAWS)
        assert abs(d[w].var(ddof=1) - var) < Z * se, (w, d[w].var(), var)


@pytest.mark.parametrize("noise", ["exponential", "halfnormal"])
def test_exponential_and_halfnormal_variances(noise):
    jitter = 0.8
    times = JobTimes(TAUS, noise, seed=3, jitter=jitter)
    d = draws_per_worker(times, DRAWS, "next")
    for w, tau in enumerate(TAUS):
        mean, var = moments(noise, tau, jitter=jitter)
        assert abs(d[w].mean() - mean) < Z * math.sqrt(var / DRAWS)
        # the sample variance's standard error sqrt((mu4 - var^2) / N), with the fourth central
        # moment mu4 of tau * Exp(1): 9 tau^4; of |N(0, s^2)|: s^4 (3 - 2 m^2 - 3 m^4),
        # m = sqrt(2/pi) (from E|Z|^3 = 2m, E|Z|^4 = 3)
        m2 = 2 / math.pi
        s4 = (jitter * tau) ** 4
        mu4 = 9 * tau**4 if noise == "exponential" else s4 * (3 - 2 * m2 - 3 * m2**2)
        se = math.sqrt((mu4 - var**2) / DRAWS)
        assert abs(d[w].var(ddof=1) - var) < Z * se


def completions(draw, n: int, horizon: float) -> np.ndarray:
    """Jobs each worker completes by ``horizon`` working back to back."""
    counts = np.zeros(n, dtype=np.int64)
    for w in range(n):
        t, c = 0.0, 0
        while True:
            t += draw(w)
            if t > horizon:
                break
            c += 1
        counts[w] = c
    return counts


@pytest.mark.parametrize("how", ["next", "drawer"])
@pytest.mark.parametrize("noise", NOISES)
def test_share_of_completions_per_unit_time(noise, how):
    """Worker i completes about T / mean_i jobs in time T; its share of all completions is
    (1/tau_i) / sum_j 1/tau_j (every model's mean is proportional to tau_i)."""
    times = JobTimes(TAUS, noise, seed=17, **KW.get(noise, {}))
    draw = times.next if how == "next" else times.drawer()
    means = np.array([moments(noise, t)[0] for t in TAUS])
    cvs = np.array([math.sqrt(moments(noise, t)[1]) / moments(noise, t)[0] for t in TAUS])
    horizon = DRAWS * means.max()  # the slowest worker completes about DRAWS jobs
    counts = completions(draw, len(TAUS), horizon)
    expected = horizon / means
    if noise == "none":
        np.testing.assert_array_equal(counts, np.floor(horizon / TAUS + 1e-9))
    # a renewal count's relative standard error: cv / sqrt(expected count), plus one job
    rel = Z * cvs / np.sqrt(expected) + 1.0 / expected
    assert (np.abs(counts / expected - 1) < rel).all(), (counts, expected)
    share = counts / counts.sum()
    hand = (1 / TAUS) / (1 / TAUS).sum()  # [0.48, 0.24, 0.16, 0.12]
    np.testing.assert_allclose(hand, [0.48, 0.24, 0.16, 0.12], rtol=1e-12)
    assert (np.abs(share / hand - 1) < rel + rel.max()).all(), (share, hand)


@pytest.mark.parametrize("noise", ["exponential", "gamma", "halfnormal"])
def test_the_straggler_factor_shows_in_the_draws(noise):
    """straggler: the LAST worker is 20 times slower, the others equally fast."""
    taus = mean_times("straggler", 4, 0.5, stragglers=1, factor=20.0)
    d = draws_per_worker(JobTimes(taus, noise, seed=2), DRAWS, "drawer")
    mean, var = moments(noise, 0.5)
    se = math.sqrt(var / DRAWS)
    for w in range(3):
        assert abs(d[w].mean() - mean) < Z * se
    assert abs(d[3].mean() - 20 * mean) < Z * 20 * se
    ratio = d[3].mean() / d[:3].mean()
    assert 18 < ratio < 22


# -- streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["exponential", "gamma", "halfnormal"])
def test_draws_differ_between_workers_and_seeds(noise):
    taus = np.ones(3)  # equal times: only the streams tell the workers apart
    a = draws_per_worker(JobTimes(taus, noise, seed=0), 100, "next")
    b = draws_per_worker(JobTimes(taus, noise, seed=1), 100, "next")
    for u in range(3):
        for w in range(u + 1, 3):
            assert not np.isin(a[u], a[w]).any()  # no draw shared between workers
        assert not np.isin(a[u], b[u]).any()  # nor between seeds
    again = draws_per_worker(JobTimes(taus, noise, seed=0), 100, "drawer")
    np.testing.assert_array_equal(a, again)  # the same seed: the same draws


@pytest.mark.parametrize("noise", NOISES)
def test_a_workers_jth_job_gets_the_jth_draw_of_its_own_stream_in_any_order(noise):
    """Whichever of next() / drawer() is used, mixed, and in whatever order workers are asked
    (across the refill of draws in blocks), worker w's j-th duration is the same."""
    n, count = 4, 100
    taus = mean_times("sqrt", n, 0.7)
    kw = KW.get(noise, {})
    in_order = draws_per_worker(JobTimes(taus, noise, seed=9, **kw), count, "next")
    rng = np.random.default_rng(123)
    orders = {
        "workers reversed": [w for w in reversed(range(n)) for _ in range(count)],
        "interleaved": [w for _ in range(count) for w in range(n)],
        "shuffled": rng.permutation(np.repeat(np.arange(n), count)).tolist(),
    }
    for label, order in orders.items():
        times = JobTimes(taus, noise, seed=9, **kw)
        draw = times.drawer()
        got: list[list[float]] = [[] for _ in range(n)]
        for i, w in enumerate(order):  # alternate the two ways of asking
            got[w].append(times.next(w) if i % 3 == 0 else draw(w))
        np.testing.assert_array_equal(np.array(got), in_order, err_msg=label)
    alone = JobTimes(taus, noise, seed=9, **kw)  # one worker asked, no other
    np.testing.assert_array_equal([alone.next(2) for _ in range(count)], in_order[2])


def test_draws_follow_the_documented_stream():
    """The record contract (docs/methods.md section 4, pipeline/core/streams.py): worker w's
    durations come from default_rng(SeedSequence(seed, spawn_key=(1, w))), one draw a job."""
    taus = np.array([0.5, 2.0, 3.0])
    d = draws_per_worker(JobTimes(taus, "exponential", seed=4), 70, "drawer")
    for w, tau in enumerate(taus):
        rng = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(1, w)))
        np.testing.assert_array_equal(d[w], [tau * rng.standard_exponential() for _ in range(70)])


def test_bad_noise_models_are_refused():
    with pytest.raises(ValueError, match="unknown noise"):
        JobTimes(TAUS, "uniform")
    with pytest.raises(ValueError, match="gamma_shape must be positive"):
        JobTimes(TAUS, "gamma", gamma_shape=0.0)
    with pytest.raises(ValueError, match="jitter must be >= 0"):
        JobTimes(TAUS, "halfnormal", jitter=-0.1)
