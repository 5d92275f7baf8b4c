"""Worker-time models by hand (pipeline/core/topology.py, docs/methods.md section 4): the mean
time tau_i of every topology and its documented defaults, the messages of impossible settings,
and the per-job durations as the draws of each worker's own seeded stream, in order."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.streams import TIMES, stream
from pipeline.core.topology import JobTimes, harmonic_prefix, mean_times


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    return str(err.value)


# -- mean times ----------------------------------------------------------------------------------
def test_the_mean_time_of_each_topology():
    for model in ("homogeneous", "native", "trace"):
        assert mean_times(model, 3, 2.5).tolist() == [2.5, 2.5, 2.5]
    assert mean_times("linear", 4, 0.5).tolist() == [0.5, 1.0, 1.5, 2.0]
    assert mean_times("sqrt", 4, 3.0).tolist() == [3.0, 3.0 * 2**0.5, 3.0 * 3**0.5, 6.0]
    assert mean_times("straggler", 4, 2.0, stragglers=2, factor=5.0).tolist() == [2, 2, 10, 10]
    assert mean_times("two_class", 5, fraction_fast=0.4, tau_fast=0.5, tau_slow=3.0).tolist() == [
        0.5,
        0.5,
        3.0,
        3.0,
        3.0,
    ]
    assert mean_times("custom", 3, times=[4, 1, 2]).tolist() == [4.0, 1.0, 2.0]
    assert mean_times("linear", 1).tolist() == [1.0]  # one worker is enough


def test_mean_times_are_floats_from_integer_arguments():
    for out in (  # (homogeneous keeps the type of tau: JobTimes makes it float)
        mean_times("linear", 3, 2),
        mean_times("two_class", 2, tau_fast=1, tau_slow=4),
        mean_times("custom", 2, times=[1, 2]),
    ):
        assert out.dtype == np.float64


def test_the_documented_defaults():
    assert mean_times("linear", 3).tolist() == [1.0, 2.0, 3.0]  # tau = 1
    assert mean_times("straggler", 4).tolist() == [1.0, 1.0, 1.0, 100.0]  # one, 100 times slower
    assert mean_times("two_class", 4).tolist() == [1.0, 1.0, 10.0, 10.0]  # half fast: 1 and 10


def test_stragglers_and_fast_fractions_at_their_bounds():
    assert mean_times("straggler", 3, stragglers=0).tolist() == [1.0, 1.0, 1.0]
    assert mean_times("straggler", 3, stragglers=3, factor=4.0).tolist() == [4.0, 4.0, 4.0]
    assert mean_times("two_class", 2, fraction_fast=0.0).tolist() == [10.0, 10.0]
    assert mean_times("two_class", 2, fraction_fast=1.0).tolist() == [1.0, 1.0]
    assert mean_times("two_class", 8, fraction_fast=0.3).tolist() == [1.0] * 2 + [10.0] * 6


def test_impossible_topologies_are_refused_with_their_values():
    assert message(mean_times, "linear", 0) == "n_workers must be >= 1, got 0"
    assert message(mean_times, "straggler", 3, stragglers=4) == (
        "stragglers must be in [0, n_workers=3], got 4"
    )
    assert message(mean_times, "straggler", 3, stragglers=-1) == (
        "stragglers must be in [0, n_workers=3], got -1"
    )
    assert message(mean_times, "two_class", 3, fraction_fast=1.5) == (
        "fraction_fast must be in [0, 1], got 1.5"
    )
    assert message(mean_times, "two_class", 3, fraction_fast=-0.5) == (
        "fraction_fast must be in [0, 1], got -0.5"
    )
    assert message(mean_times, "custom", 3) == (
        "topology=custom needs topology.times, a list of n_workers times"
    )
    assert message(mean_times, "custom", 3, times=[1.0, 2.0]) == (
        "topology.times has 2 entries but topology.n_workers is 3"
    )
    assert message(mean_times, "ring", 3) == (
        "unknown topology 'ring'; choose one of homogeneous, linear, sqrt, straggler, two_class, "
        "custom, native, trace"
    )


@pytest.mark.parametrize(
    ("times", "shown"),
    [
        ([1.0, 0.0], "[1.0, 0.0]"),
        ([-1.0, 2.0], "[-1.0, 2.0]"),
        ([1.0, float("inf")], "[1.0, inf]"),
        ([float("nan"), 1.0], "[nan, 1.0]"),
        ([1.0] * 9 + [0.0], "[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]"),  # the first 8
    ],
)
def test_worker_times_must_be_positive_and_finite(times, shown):
    got = message(mean_times, "custom", len(times), times=times)
    assert got == f"worker times must be positive and finite, got {shown}"
    assert message(mean_times, "linear", 2, 0.0) == "worker times must be positive and finite, " + (
        "got [0.0, 0.0]"
    )


def test_harmonic_prefix_over_the_fastest_workers():
    h = harmonic_prefix(np.array([2.0, 1.0, 4.0], dtype=np.float32))  # sorted: 1, 2, 4
    assert h.dtype == np.float64
    np.testing.assert_allclose(h, [1.0, 2 / 1.5, 3 / 1.75], rtol=1e-15)


# -- job durations -------------------------------------------------------------------------------
def stream_draws(seed, worker, count, draw):
    """``count`` values of ``draw(rng, size)`` from worker ``worker``'s stream, in blocks of 32
    as JobTimes draws them."""
    rng = stream(seed, TIMES, worker)
    blocks = -(-count // JobTimes._BLOCK)
    return np.concatenate([draw(rng, JobTimes._BLOCK) for _ in range(blocks)])[:count]


@pytest.mark.parametrize(
    ("noise", "kwargs", "draw"),
    [
        ("exponential", {}, lambda rng, k: rng.standard_exponential(k)),
        ("gamma", {}, lambda rng, k: rng.gamma(2.0, 1 / 2.0, k)),  # shape 2, mean 1
        ("gamma", {"gamma_shape": 0.5}, lambda rng, k: rng.gamma(0.5, 1 / 0.5, k)),
        ("halfnormal", {}, lambda rng, k: 1 + np.abs(rng.standard_normal(k)) * 0.5),
        ("halfnormal", {"jitter": 2.0}, lambda rng, k: 1 + np.abs(rng.standard_normal(k)) * 2.0),
        ("halfnormal", {"jitter": 0.0}, lambda rng, k: np.ones(k)),
    ],
)
def test_job_durations_are_tau_times_each_workers_own_draws_in_order(noise, kwargs, draw):
    taus = [1.0, 3.0]
    t = JobTimes(taus, noise, 11, **kwargs)
    fetch = t.drawer()
    # worker 1 first, past a block boundary, then worker 0: each worker has its own stream
    got1 = [fetch(1) for _ in range(40)] + [t.next(1) for _ in range(30)]
    got0 = [t.next(0) for _ in range(35)]
    np.testing.assert_allclose(got1, 3.0 * stream_draws(11, 1, 70, draw), rtol=1e-14)
    np.testing.assert_allclose(got0, 1.0 * stream_draws(11, 0, 35, draw), rtol=1e-14)


def test_durations_default_to_the_mean_times_and_seed_0():
    t = JobTimes([1, 2])
    assert t.noise == "none" and t.seed == 0 and t.n_workers == 2
    assert t.taus.dtype == np.float64
    got = [t.next(1), t.drawer()(1), t.next(0)]
    assert got == [2.0, 2.0, 1.0] and all(type(d) is float for d in got)
    draws = [JobTimes([1.0], "exponential").next(0) for _ in range(2)]
    assert draws == [stream_draws(0, 0, 1, lambda rng, k: rng.standard_exponential(k))[0]] * 2


def test_impossible_noises_are_refused_with_their_values():
    assert message(JobTimes, [1.0], "uniform") == (
        "unknown noise 'uniform'; choose one of none, exponential, gamma, halfnormal"
    )
    assert message(JobTimes, [1.0], "gamma", gamma_shape=0.0) == (
        "gamma_shape must be positive, got 0.0"
    )
    assert message(JobTimes, [1.0], "halfnormal", jitter=-0.5) == "jitter must be >= 0, got -0.5"
    # each shape parameter is checked only for its own noise
    JobTimes([1.0], "exponential", gamma_shape=0.0, jitter=-1.0)
    JobTimes([1.0], "gamma", gamma_shape=0.5, jitter=-1.0)
    JobTimes([1.0], "halfnormal", gamma_shape=-1.0, jitter=0.5)
