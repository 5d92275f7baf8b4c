"""Rennala SGD (docs/methods.md): the first S gradients at x_k make a step, stale ones are
discarded (or cancelled): its decisions alone, then hand-derived traces through the event
engine."""

from __future__ import annotations

from pipeline.core.methods import Decision, RennalaSGD
from tests.core.methods.traces import LR, assert_iterates, reference_iterates, run_trace


def test_the_first_s_gradients_at_x_k_make_a_step_and_stale_ones_are_discarded():
    r = RennalaSGD(3, 0.2, batch=2)
    assert r.on_gradient(0, 0) == Decision(0, 0.1, False, (0,))
    assert r.on_gradient(1, 0) == Decision(0, 0.1, True, (1,))
    assert r.on_gradient(2, 0) == Decision(1, 0.0, False, (2,))  # x_0 is stale now
    assert r.version == 1


def test_with_cancel_a_step_cancels_and_restarts_every_live_worker():
    r = RennalaSGD(3, 0.2, batch=2, cancel=True)
    r.on_worker_lost(1)
    r.on_gradient(0, 0)
    assert r.on_gradient(2, 0) == Decision(0, 0.1, True, (0, 2), (0, 2))


RENNALA_EVENTS = [  # S = 2, finish and discard: (worker, version, delay, applied, time)
    (0, 0, 0, 1, 1.0),
    (1, 0, 0, 1, 1.5),  # S = 2 reached: x_1; worker 1 restarts at x_1 (due 3.0)
    (0, 0, 1, 0, 2.0),  # started at x_0 at t=1: stale, discarded; restarts at x_1
    (2, 0, 1, 0, 2.0),
    (0, 1, 0, 1, 3.0),
    (1, 1, 0, 1, 3.0),  # x_2
    (3, 0, 2, 0, 3.0),
    (0, 1, 1, 0, 4.0),
    (2, 1, 1, 0, 4.0),
    (1, 2, 0, 1, 4.5),
    (0, 2, 0, 1, 5.0),  # x_3
    (0, 3, 0, 1, 6.0),  # ties at t=6: worker 0 first, then 1, 2, 3 (budget reached)
]


def test_rennala_finishes_and_discards_stale_jobs(tmp_path, small_data):
    """The published method: a job at an old point runs to its end, its gradient is discarded
    on arrival, and only then does its worker get the current point."""
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "rennala", 12, "optimizer.batch=2"
    )
    assert events == RENNALA_EVENTS
    # LR / S for a gradient at the current point (hand-derived delay 0), 0 for a stale one
    hand = [LR / 2 if delay == 0 else 0.0 for _, _, delay, _, _ in RENNALA_EVENTS]
    assert [w > 0 for w in hand] == [bool(e[3]) for e in RENNALA_EVENTS]
    assert lrs == hand
    assert summary["updates"] == 3 and summary["cancelled"] == 0 and summary["discarded"] == 5
    steps = [False, True, False, False, False, True, False, False, False, False, True, False]
    assert_iterates(result, reference_iterates(small_data, RENNALA_EVENTS, hand, steps))


def test_rennala_cancel_restarts_every_worker(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "rennala", 6, "optimizer.batch=2", "optimizer.cancel=true"
    )
    # S = 2: the first two arrivals at x_k make a step; then every running job is cancelled
    # and all four workers restart at x_{k+1} at that moment.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 0, 1, 1.5),
        (0, 1, 0, 1, 2.5),
        (1, 1, 0, 1, 3.0),
        (0, 2, 0, 1, 4.0),
        (1, 2, 0, 1, 4.5),
    ]
    hand = [LR / 2] * 6  # every arrival is at the current point: LR / S
    assert lrs == hand
    assert summary["updates"] == 3 and summary["cancelled"] == 9
    steps = [False, True] * 3
    assert_iterates(result, reference_iterates(small_data, events, hand, steps))
