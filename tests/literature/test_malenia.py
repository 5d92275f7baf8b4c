"""Malenia SGD (docs/methods.md, section 3.7): per-worker averages of the gradients at x_k and a
step once the harmonic mean of the counts reaches S/n: its decisions alone, then a hand-derived
trace through the event engine (rule given by _target_, the way a user's package gives one)."""

from __future__ import annotations

import pytest

from pipeline.api import Decision
from pipeline.literature import MaleniaSGD
from tests.core.methods.traces import LR, assert_iterates, reference_iterates, run_trace


def test_a_step_waits_for_every_worker_then_averages_per_worker():
    r = MaleniaSGD(3, 0.3)  # S = n = 3: step once sum_i 1/B_i <= n^2/S = 3, every B_i >= 1
    assert r.on_gradient(0, 0) == Decision(0, 0.3, False, (0,))
    assert r.on_gradient(0, 0) == Decision(0, 0.3, False, (0,))  # B = (2, 0, 0)
    assert r.on_gradient(1, 0) == Decision(0, 0.3, False, (1,))
    d = r.on_gradient(2, 0)  # B = (2, 1, 1): the mean of the three workers' means
    assert d[:5] == (0, 0.3, True, (2,), ())
    assert d.scale == pytest.approx((1 / 6, 1 / 3, 1 / 3), rel=1e-15)
    assert r.version == 1
    assert r.on_gradient(0, 0) == Decision(1, 0.0, False, (0,))  # x_0 is stale now: discarded


def test_a_larger_s_needs_a_larger_harmonic_mean():
    r = MaleniaSGD(2, 1.0, batch=4)  # step once 1/B_0 + 1/B_1 <= 4/4 = 1
    for w in (0, 1, 0):  # B = (2, 1): 1.5 > 1
        assert not r.on_gradient(w, 0).step
    d = r.on_gradient(1, 0)  # B = (2, 2): 1.0 <= 1
    assert d.step and d.scale == (0.25, 0.25)


def test_cancel_restarts_everyone_and_a_lost_worker_is_refused():
    r = MaleniaSGD(2, 1.0, cancel=True)
    r.on_gradient(0, 0)
    assert r.on_gradient(1, 0)[:5] == (0, 1.0, True, (0, 1), (0, 1))
    with pytest.raises(RuntimeError, match="worker 1 is gone"):
        r.on_worker_lost(1)
    with pytest.raises(ValueError, match="S must be >= 1"):
        MaleniaSGD(2, 1.0, batch=0)
    assert MaleniaSGD(4, 1.0, batch=10).updates_per_gradient == 0.1
    # while the slowest worker computes one gradient, worker i computes tau_max / tau_i
    assert MaleniaSGD(2, 1.0, worker_times=[1.0, 4.0]).updates_per_gradient == 1 / 5
    assert MaleniaSGD(2, 1.0, batch=8, worker_times=[1.0, 4.0]).updates_per_gradient == 1 / 8
    assert MaleniaSGD(4, 1.0).scales_steps and MaleniaSGD(4, 1.0).synchronous


MALENIA_EVENTS = [  # S = n = 4, times 1, 1.5, 2, 3: (worker, version, delay, applied, time)
    (0, 0, 0, 1, 1.0),
    (1, 0, 0, 1, 1.5),
    (0, 0, 0, 1, 2.0),
    (2, 0, 0, 1, 2.0),  # tie at t=2: worker index order
    (0, 0, 0, 1, 3.0),
    (1, 0, 0, 1, 3.0),
    (3, 0, 0, 1, 3.0),  # B = (3, 2, 1, 1), every worker in: x_1; worker 3 restarts at x_1
    (0, 0, 1, 0, 4.0),  # started at x_0 at t=3 (before the step): stale, discarded
    (2, 0, 1, 0, 4.0),
    (1, 0, 1, 0, 4.5),
    (0, 1, 0, 1, 5.0),
    (0, 1, 0, 1, 6.0),
    (1, 1, 0, 1, 6.0),
    (2, 1, 0, 1, 6.0),
    (3, 1, 0, 1, 6.0),  # B = (2, 1, 1, 1): x_2
]


def test_malenia_trace(tmp_path, small_data):
    summary, result, events, lrs = run_trace(tmp_path, small_data, "malenia", 15)
    assert events == MALENIA_EVENTS
    # each kept gradient's weight as applied: LR / (n * B_i) with B_i its worker's count in
    # that step (B = (3, 2, 1, 1) for x_1, (2, 1, 1, 1) for x_2); stale ones 0
    counts = [3, 2, 3, 1, 3, 2, 1, 0, 0, 0, 2, 2, 1, 1, 1]
    hand = [LR * (1.0 / (4 * b)) if b else 0.0 for b in counts]
    assert lrs == hand
    assert summary["updates"] == 2 and summary["discarded"] == 3
    steps = [i in (6, 14) for i in range(15)]
    assert_iterates(result, reference_iterates(small_data, MALENIA_EVENTS, hand, steps))


def test_the_counts_of_a_round_and_its_bound_exactly():
    """S = 6, n = 2: a step once 1/B_0 + 1/B_1 <= 4/6; three gradients of one worker do not
    make up for the other's one (1/3 + 1 > 2/3), and versions count every step."""
    r = MaleniaSGD(2, 1.0, batch=6)
    assert [r.on_gradient(0, 0).step for _ in range(3)] == [False] * 3
    assert not r.on_gradient(1, 0).step  # B = (3, 1)
    assert not r.on_gradient(1, 0).step  # (3, 2): 5/6
    d = r.on_gradient(1, 0)  # (3, 3): 2/3
    assert d.step and d.scale == pytest.approx((1 / 6, 1 / 6), rel=1e-15)
    for v in (1, 2):  # the same round twice more
        steps = [r.on_gradient(w, v).step for w in (0, 0, 0, 1, 1, 1)]
        assert steps == [False] * 5 + [True]
    assert r.version == 3
    assert MaleniaSGD(2, 1.0, batch=1).batch == 1  # S = 1 is a valid S
    assert MaleniaSGD(4, 1.0).updates_per_gradient == 0.25  # S = n, no times given
    assert MaleniaSGD(2, 0.5, batch=3, cancel=True).describe() == {
        "lr": 0.5, "batch": 3, "cancel": True,
    }  # fmt: skip
    d = MaleniaSGD(2, 1.0, cancel=True)
    d.on_gradient(0, 0)
    assert d.on_gradient(1, 0).scale == (0.5, 0.5)  # cancel keeps the per-worker factors
