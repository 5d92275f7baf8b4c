"""Ringmaster ASGD (docs/methods.md): delay threshold R, optional cancellation of stale jobs:
its decisions alone, then hand-derived traces through the event engine."""

from __future__ import annotations

from pipeline.core.methods import Decision, RingmasterASGD
from tests.core.methods.test_asgd import DROP_EVENTS
from tests.core.methods.traces import LR, assert_iterates, reference_iterates, run_trace


def test_delay_below_r_is_applied_at_r_ignored_and_the_worker_restarts():
    r = RingmasterASGD(3, 0.1, threshold=2)
    assert r.on_gradient(0, 0) == Decision(0, 0.1, True, (0,))
    assert r.on_gradient(0, 1) == Decision(0, 0.1, True, (0,))
    assert r.on_gradient(1, 0) == Decision(2, 0.0, False, (1,))  # delay 2 >= R
    assert r.on_gradient(2, 1) == Decision(1, 0.1, True, (2,))  # delay 1 < R
    assert r.version == 3


def test_cancel_restarts_running_jobs_once_their_delay_reaches_r():
    r = RingmasterASGD(3, 0.1, threshold=2, cancel=True)
    assert r.on_gradient(0, 0) == Decision(0, 0.1, True, (0,), ())
    # k = 2: the jobs of workers 1 and 2 (started at x_0) reach delay 2 = R
    assert r.on_gradient(0, 1) == Decision(0, 0.1, True, (0, 1, 2), (1, 2))
    # they restarted at x_2; worker 0's job (x_2) arrives: k = 3, nothing reaches delay 2 yet
    assert r.on_gradient(0, 2) == Decision(0, 0.1, True, (0,), ())


def test_ringmaster_without_stopping_equals_drop_at_r_minus_one(tmp_path, small_data):
    # Ringmaster applies delay < R; drop applies delay <= threshold: R = 3 is threshold 2
    _, result, events, lrs = run_trace(
        tmp_path, small_data, "ringmaster", 15, "optimizer.threshold=3"
    )
    assert events == DROP_EVENTS
    # from the hand-derived delays: the constant stepsize where tau_k < R = 3, else ignored
    hand = [LR if delay < 3 else 0.0 for _, _, delay, _, _ in DROP_EVENTS]
    steps = [w > 0 for w in hand]
    assert steps == [bool(e[3]) for e in DROP_EVENTS]
    assert lrs == hand
    assert_iterates(result, reference_iterates(small_data, DROP_EVENTS, hand, steps))


def test_ringmaster_stop_stale_cancels_at_delay_r(tmp_path, small_data):
    summary, result, events, lrs = run_trace(
        tmp_path,
        small_data,
        "ringmaster",
        10,
        "optimizer.threshold=3",
        "optimizer.cancel=true",
    )
    # t=2: k reaches 3, so the jobs of workers 2 and 3 (version 0) are cancelled and restarted
    # at x_3 (due at 4 and 5); at t=4 (k=6) and t=6 (k=9) the same happens again, each time
    # before worker 2's arrival, which ties with worker 0's and comes second.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 1, 1, 1.5),
        (0, 1, 1, 1, 2.0),
        (0, 3, 0, 1, 3.0),
        (1, 2, 2, 1, 3.0),
        (0, 4, 1, 1, 4.0),
        (1, 5, 1, 1, 4.5),
        (0, 6, 1, 1, 5.0),
        (0, 8, 0, 1, 6.0),
        (1, 7, 2, 1, 6.0),
    ]
    assert summary["cancelled"] == 6 and summary["discarded"] == 0
    hand = [LR] * 10  # every delay is below R (stale jobs were cancelled): the constant stepsize
    assert lrs == hand
    assert_iterates(result, reference_iterates(small_data, events, hand, [True] * 10))
