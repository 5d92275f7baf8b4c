"""AsyncSGD (docs/methods.md: asynchronous SGD with constant, delay-adaptive and drop
stepsizes): its decisions alone, then hand-derived traces through the event engine."""

from __future__ import annotations

import pytest

from pipeline.core.methods import AsyncSGD, Decision
from tests.core.methods.traces import (
    ASGD_EVENTS,
    LR,
    assert_iterates,
    reference_iterates,
    run_trace,
)


def test_constant_stepsize_applies_every_gradient_and_its_worker_goes_on():
    r = AsyncSGD(4, 0.1)
    assert r.start() == (0, 1, 2, 3)
    assert r.on_gradient(0, 0) == Decision(0, 0.1, True, (0,))
    assert r.on_gradient(1, 0) == Decision(1, 0.1, True, (1,))
    assert r.on_gradient(2, 0) == Decision(2, 0.1, True, (2,))
    assert r.version == 3


def test_adaptive_stepsize_is_lr_times_n_over_tau_beyond_n():
    r = AsyncSGD(2, 0.3, "adaptive")
    for v in range(3):
        r.on_gradient(0, v)  # k = 3
    d = r.on_gradient(1, 0)  # delay 3 > n = 2: 0.3 * 2 / 3
    assert (d.delay, d.step, d.assign) == (3, True, (1,))
    assert d.weight == pytest.approx(0.2, rel=1e-15)
    assert r.on_gradient(0, 2).weight == 0.3  # delay 2 = n: the full stepsize


def test_drop_discards_beyond_the_threshold_and_the_worker_restarts_at_x_k():
    r = AsyncSGD(4, 0.1, "drop", threshold=1)
    r.on_gradient(0, 0)
    r.on_gradient(0, 1)  # k = 2
    assert r.on_gradient(1, 0) == Decision(2, 0.0, False, (1,))
    assert r.version == 2
    assert r.on_gradient(1, 1) == Decision(1, 0.1, True, (1,))
    with pytest.raises(ValueError, match="unknown stepsize rule"):
        AsyncSGD(4, 0.1, "nope")


def test_asgd_constant(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "asgd", 10)
    assert events == ASGD_EVENTS
    hand = [LR] * 10  # the constant stepsize
    assert lrs == hand
    assert summary["updates"] == 10 and summary["max_delay"] == 6
    assert summary["mean_delay"] == pytest.approx(24 / 10)
    assert summary["sim_time"] == 4.5
    assert_iterates(result, reference_iterates(small_data, ASGD_EVENTS, hand, [True] * 10))


def test_asgd_adaptive_scales_long_delays(tmp_path, small_data):
    _, result, events, lrs = run_trace(tmp_path, small_data, "asgd_adaptive", 10)
    assert events == ASGD_EVENTS  # same arrivals: the stepsize never discards
    # gamma * n / max(n, tau_k) with n = 4, from the hand-derived delays
    hand = [LR * 4 / max(4, delay) for _, _, delay, _, _ in ASGD_EVENTS]
    assert hand == [LR] * 6 + [LR * 4 / 6] + [LR] * 3  # only the delay-6 gradient is scaled
    assert lrs == pytest.approx(hand, rel=1e-15)
    assert_iterates(result, reference_iterates(small_data, ASGD_EVENTS, hand, [True] * 10))


DROP_EVENTS = [  # threshold 2: delays 3, 5, 3, 4, 5 are discarded, the worker restarts at x_k
    (0, 0, 0, 1, 1.0),
    (1, 0, 1, 1, 1.5),
    (0, 1, 1, 1, 2.0),
    (2, 0, 3, 0, 2.0),
    (0, 3, 0, 1, 3.0),
    (1, 2, 2, 1, 3.0),
    (3, 0, 5, 0, 3.0),
    (0, 4, 1, 1, 4.0),
    (2, 3, 3, 0, 4.0),
    (1, 5, 1, 1, 4.5),
    (0, 6, 1, 1, 5.0),
    (0, 8, 0, 1, 6.0),
    (1, 7, 2, 1, 6.0),
    (2, 6, 4, 0, 6.0),
    (3, 5, 5, 0, 6.0),
]


def test_asgd_drop_threshold(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "asgd_drop", 15, "optimizer.threshold=2"
    )
    assert events == DROP_EVENTS
    # the hand-derived delays: LR where tau_k <= 2, 0 (dropped, no step) beyond
    hand = [LR if delay <= 2 else 0.0 for _, _, delay, _, _ in DROP_EVENTS]
    steps = [w > 0 for w in hand]
    assert steps == [bool(e[3]) for e in DROP_EVENTS]
    assert lrs == hand
    assert summary["updates"] == 10 and summary["discarded"] == 5
    assert_iterates(result, reference_iterates(small_data, DROP_EVENTS, hand, steps))


def test_asgd_drop_default_threshold_is_n(tmp_path, small_data):
    _, _, events, _ = run_trace(tmp_path, small_data, "asgd_drop", 10)
    # with threshold n = 4, only the delay-6 arrival of ASGD_EVENTS is discarded
    assert [e[3] for e in events[:7]] == [1, 1, 1, 1, 1, 1, 0]
