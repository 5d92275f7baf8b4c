"""Minibatch SGD (docs/methods.md): rounds that wait for every live worker: its decisions
alone, then a hand-derived trace through the event engine."""

from __future__ import annotations

import pytest

from pipeline.core.methods import Decision, MinibatchSGD
from tests.core.methods.traces import LR, assert_iterates, reference_iterates, run_trace


def test_a_round_steps_once_every_live_worker_sent_a_gradient_at_x_k():
    r = MinibatchSGD(3, 1.5)
    assert r.on_gradient(0, 0) == Decision(0, 0.5, False)
    assert r.on_gradient(2, 0) == Decision(0, 0.5, False)
    assert r.on_gradient(1, 0) == Decision(0, 0.5, True, (0, 1, 2))
    assert r.version == 1
    assert r.on_gradient(0, 0) == Decision(1, 0.0, False)  # a stale gradient
    assert r.on_gradient(0, 1) == Decision(0, 0.5, False)
    assert r.on_gradient(0, 1) == Decision(0, 0.0, False)  # twice in one round: ignored


def test_each_round_is_one_version_later():
    r = MinibatchSGD(2, 1.0)
    for k in range(3):  # rounds at x_0, x_1, x_2
        assert r.on_gradient(1, k) == Decision(0, 0.5, False)
        assert r.on_gradient(0, k) == Decision(0, 0.5, True, (0, 1))
        assert r.version == k + 1
    assert r.on_gradient(0, 1) == Decision(2, 0.0, False)  # two rounds late: stale by 2
    assert r.on_gradient(1, 3) == Decision(0, 0.5, False)
    assert r.on_worker_lost(0) == Decision(0, 0.0, True, (1,))  # the round it closes: x_4
    assert r.version == 4


def test_a_lost_worker_shrinks_the_round_and_may_close_it():
    r = MinibatchSGD(3, 1.5)
    r.on_gradient(0, 0)
    assert r.on_worker_lost(2) is None  # worker 1 is still awaited
    assert r.on_gradient(1, 0) == Decision(0, 0.75, True, (0, 1))  # lr / 2 live workers
    r.on_gradient(0, 1)
    assert r.on_worker_lost(1) == Decision(0, 0.0, True, (0,))  # it was the last awaited
    with pytest.raises(RuntimeError, match="every worker is gone"):
        r.on_worker_lost(0)


def test_minibatch_round_lasts_as_long_as_the_slowest_job(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "minibatch", 8)
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 1, 1.5),
        (2, 0, 0, 1, 2.0),
        (3, 0, 0, 1, 3.0),
        (0, 1, 0, 1, 4.0),
        (1, 1, 0, 1, 4.5),
        (2, 1, 0, 1, 5.0),
        (3, 1, 0, 1, 6.0),
    ]
    hand = [LR / 4] * 8  # the mean of 4 gradients, stepsize LR
    assert lrs == hand
    assert summary["updates"] == 2 and summary["sim_time"] == 6.0
    steps = [False, False, False, True] * 2
    assert_iterates(result, reference_iterates(small_data, events, hand, steps))
