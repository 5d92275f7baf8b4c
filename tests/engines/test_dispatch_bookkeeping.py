"""The dispatcher's bookkeeping where tests/engines/test_dispatch.py does not look: a lost
worker's decision carried out (steps checked against the server, cancellations, assignments),
the busy flags and points of cancelled and lost jobs, and the rule told which worker is gone."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.methods import Decision, MinibatchSGD
from pipeline.core.server import ParameterServer
from pipeline.engines.dispatch import Dispatcher
from tests.engines.test_dispatch import Scripted, make


class LosingRule(Scripted):
    """A scripted rule that records which worker it was told is lost and answers with a fixed
    decision (stepping its version if the decision steps, unless told not to)."""

    def __init__(self, n, decisions, on_lost, keep_version=False, **kwargs):
        super().__init__(n, decisions, on_lost=on_lost, keep_version=keep_version, **kwargs)
        self.lost_told = []

    def on_worker_lost(self, worker):
        self.lost_told.append(worker)
        if self.on_lost is not None and self.on_lost.step and not self.keep_version:
            self.version += 1
        return self.on_lost


def served(rule):
    """A dispatcher over a real server whose ``apply`` adds a gradient of ones; the calls made."""
    server = ParameterServer(torch.zeros(1, dtype=torch.float64))
    calls = []

    def apply(w, v, weight, step):
        calls.append(("apply", w, v, weight, step))
        if weight:
            server.add(weight, torch.ones(1, dtype=torch.float64), step)
        elif step:
            server.step()

    disp = Dispatcher(
        rule,
        start_job=lambda w, v: calls.append(("start", w, v)),
        cancel_job=lambda w, v: calls.append(("cancel", w, v)),
        apply=apply,
        server=server,
    )
    return disp, server, calls


def test_the_rule_is_told_which_worker_is_lost_and_its_flags_drop():
    rule = LosingRule(3, [], on_lost=None)
    disp, calls = make(rule)
    disp.begin()
    calls.clear()
    assert disp.lose(1, 2.0) is None
    assert rule.lost_told == [1]
    assert disp.busy == [True, False, True] and disp.in_flight == 2
    assert disp.lost == [False, True, False] and disp.alive == 2
    assert calls == []  # nothing to carry out, nothing cancelled through the engine


def test_a_lost_workers_step_is_checked_against_the_server():
    # minibatch: worker 1 was the last one the round waited for, so its loss closes the round
    rule = MinibatchSGD(2, 0.5)
    disp, server, calls = served(rule)
    disp.begin()
    disp.arrive(0, 1.0)  # buffered with weight 0.25, the round waits for worker 1
    calls.clear()
    d = disp.lose(1, 2.0)
    assert d == Decision(0, 0.0, True, (0,))
    assert calls == [("apply", -1, 1, 0.0, True), ("start", 0, 1)]  # v: the rule's, after
    assert server.version == rule.version == 1
    assert server.x.tolist() == [-0.25]  # the buffered gradient applied by the closing step
    assert set(server._points) == {1}  # x_0 released by both jobs, x_1 held by worker 0's


def test_a_lost_workers_step_that_the_rule_does_not_count_is_caught():
    rule = LosingRule(2, [], on_lost=Decision(0, 0.0, True), keep_version=True)
    disp, server, _ = served(rule)
    disp.begin()
    with pytest.raises(AssertionError, match="server at version 1 but rule scripted at 0"):
        disp.lose(0, 1.0)


def test_a_lost_workers_step_without_a_server_is_carried_out():
    rule = LosingRule(2, [], on_lost=Decision(0, 0.0, True, (1,)))
    disp, calls = make(rule)
    disp.begin()
    calls.clear()
    disp.lose(0, 1.0)
    assert calls == [("apply", -1, 1, 0.0, True)]  # w = -1, at the rule's version after the step
    assert list(disp.queues[1]) == [1]  # worker 1 busy: its new job queued at version 1


def test_a_lost_workers_decision_cancels_before_it_assigns():
    rule = LosingRule(3, [], on_lost=Decision(0, 0.0, False, (2,), (1, 2)))
    disp, calls = make(rule)
    disp.begin()
    calls.clear()
    disp.lose(0, 1.0)
    assert calls == [
        ("apply", -1, 0, 0.0, False),
        ("cancel", 1, 0),
        ("cancel", 2, 0),
        ("start", 2, 0),
    ]
    assert disp.cancelled == 2
    assert disp.busy == [False, False, True] and disp.in_flight == 1


def test_a_cancelled_worker_with_nothing_queued_is_idle_and_its_point_released():
    rule = Scripted(2, [Decision(0, 0.5, True, (0,), (1,))])
    disp, server, calls = served(rule)
    disp.begin()
    calls.clear()
    disp.arrive(0, 1.0)
    assert calls == [("apply", 0, 0, 0.5, True), ("cancel", 1, 0), ("start", 0, 1)]
    assert disp.busy == [True, False] and disp.in_flight == 1 and disp.cancelled == 1
    assert set(server._points) == {1}  # x_0 released by both jobs
    assert server._points[1][1] == 1


def test_a_lost_workers_queued_jobs_release_their_points():
    rule = Scripted(2, [Decision(0, 0.5, True, (1,)), Decision(0, 0.5, True, (1,))])
    disp, server, _ = served(rule)
    disp.begin()
    disp.arrive(0, 1.0)  # worker 1 busy: a job at x_1 queued
    disp.assign(0)
    disp.arrive(0, 2.0)  # another at x_2 queued
    assert list(disp.queues[1]) == [1, 2]
    assert {v: e[1] for v, e in server._points.items()} == {0: 1, 1: 1, 2: 1}
    disp.lose(1, 3.0)
    assert list(disp.queues[1]) == [] and disp.busy == [False, False]
    assert server._points == {}  # its running job (x_0) and both queued ones released
