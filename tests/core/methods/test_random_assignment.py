"""Asynchronous SGD with random assignment (docs/methods.md): jobs go to workers drawn at
random and queue in FIFO order: its decisions alone, then a hand-derived trace through the event
engine."""

from __future__ import annotations

import numpy as np

from pipeline.core.methods import Decision, RandomAssignmentASGD
from tests.core.methods.traces import LR, assert_iterates, reference_iterates, run_trace


class ScriptedDraws:
    """Stands in for the rule's generator: returns a fixed sequence of worker draws."""

    def __init__(self, draws):
        self.draws = list(draws)

    def integers(self, low, high, size):
        out = np.array((self.draws + [0] * size)[:size])
        self.draws = self.draws[size:]
        return out


def test_each_arrival_gives_a_job_to_a_drawn_worker_not_the_one_that_finished():
    r = RandomAssignmentASGD(3, 0.1, ScriptedDraws([2, 2, 0]))
    assert r.on_gradient(0, 0) == Decision(0, 0.1, True, (2,))
    assert r.on_gradient(1, 0) == Decision(1, 0.1, True, (2,))
    assert r.on_gradient(2, 0) == Decision(2, 0.1, True, (0,))


def test_a_lost_workers_jobs_go_to_workers_drawn_among_the_others():
    r = RandomAssignmentASGD(3, 0.1, ScriptedDraws([1, 1, 1, 0]))
    r.on_gradient(0, 0)  # a second job for worker 1 (draw 1): it holds two now
    # both go elsewhere: draws 1 (lost, drawn again), 1 (again), then 0; the next draw is 0
    assert r.on_worker_lost(1) == Decision(0, 0.0, False, (0, 0))


def test_random_assignment_queues_fifo(tmp_path, small_data, monkeypatch):
    import pipeline.core.methods as methods

    real = methods.RandomAssignmentASGD

    def scripted(n, lr, rng, stepsize="constant", threshold=None):
        return real(n, lr, ScriptedDraws([2, 2, 0, 1, 1, 0]), stepsize, threshold)

    monkeypatch.setitem(methods.METHODS, "asgd_random", lambda n, lr, o, rng: scripted(n, lr, rng))
    summary, result, events, lrs = run_trace(
        tmp_path, small_data, "asgd_random", 6, times="topology.times=[1.0,2.0,4.0]", n=3
    )
    # t=1: w0 done, job for w2 queued (busy) -> w0 idles; t=2: same for w1; t=4: w2 done,
    # w0 gets x_3, then w2 starts its queue head x_1; t=5: w1 gets x_4; t=7: w1 gets x_5;
    # t=8: w2's queued job arrives with delay 4, its waiting time included.
    assert events == [
        (0, 0, 0, 1, 1.0),
        (1, 0, 1, 1, 2.0),
        (2, 0, 2, 1, 4.0),
        (0, 3, 0, 1, 5.0),
        (1, 4, 0, 1, 7.0),
        (2, 1, 4, 1, 8.0),
    ]
    hand = [LR] * 6  # the constant stepsize
    assert lrs == hand
    assert_iterates(result, reference_iterates(small_data, events, hand, [True] * 6))
