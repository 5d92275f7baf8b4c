"""The dispatcher on its own (no clock, no engine): a scripted rule's decisions carried out as
docs/methods.md and pipeline/core/methods/base.py say: apply, then cancel, then assign; a job
for a busy worker waits in that worker's FIFO queue with the version current when it was
assigned; cancelled and lost jobs release their points; the rule's and the server's versions
must agree after every step."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.methods.base import Decision, ServerRule
from pipeline.core.server import ParameterServer
from pipeline.engines.dispatch import Dispatcher


class Scripted(ServerRule):
    """Answers each arrival with the next scripted decision (stepping its version when the
    decision steps, unless told not to)."""

    name = "scripted"

    def __init__(self, n, decisions, start=None, keep_version=False, on_lost=None):
        super().__init__(n, 1.0)
        self.decisions = list(decisions)
        self.seen = []
        self._start = tuple(range(n)) if start is None else start
        self.keep_version = keep_version
        self.on_lost = on_lost

    def start(self):
        return self._start

    def on_gradient(self, worker, version):
        self.seen.append((worker, version))
        d = self.decisions.pop(0)
        if d.step and not self.keep_version:
            self.version += 1
        return d

    def on_worker_lost(self, worker):
        return self.on_lost


def make(rule, server=None):
    calls = []
    disp = Dispatcher(
        rule,
        start_job=lambda w, v: calls.append(("start", w, v)),
        cancel_job=lambda w, v: calls.append(("cancel", w, v)),
        apply=lambda w, v, weight, step: calls.append(("apply", w, v, weight, step)),
        server=server,
    )
    return disp, calls


def with_server(rule):
    """A dispatcher over a real parameter server whose ``apply`` adds a gradient of ones."""
    server = ParameterServer(torch.zeros(2))
    disp = Dispatcher(
        rule,
        start_job=lambda w, v: None,
        apply=lambda w, v, weight, step: server.add(weight, torch.ones(2), step),
        server=server,
    )
    return disp, server


def test_begin_starts_the_rules_first_workers_at_version_0():
    disp, calls = make(Scripted(3, [], start=(0, 2)))
    disp.begin()
    assert calls == [("start", 0, 0), ("start", 2, 0)]
    assert disp.busy == [True, False, True] and disp.in_flight == 2


def test_a_job_for_a_busy_worker_waits_in_its_fifo_queue_at_the_version_of_assignment():
    rule = Scripted(2, [
        Decision(0, 0.5, True, (1,)),   # w0 arrives: step to 1, a job for busy w1 (queued at 1)
        Decision(1, 0.5, True, (1,)),   # w1 arrives (x_0): step to 2, another job for w1 at 2
        Decision(1, 0.5, True, ()),     # w1's first queued job (x_1) arrives: step to 3
        Decision(1, 0.0, False, ()),    # w1's second queued job (x_2) arrives, discarded
    ])  # fmt: skip
    disp, calls = make(rule)
    disp.begin()
    calls.clear()
    disp.arrive(0, 1.0)
    assert calls == [("apply", 0, 0, 0.5, True)]  # w1 busy: queued, w0 gets nothing
    assert list(disp.queues[1]) == [1] and not disp.busy[0]
    calls.clear()
    disp.arrive(1, 2.0)
    # apply first, then assign: the new job queues behind the one at 1, and w1 starts the head
    assert calls == [("apply", 1, 0, 0.5, True), ("start", 1, 1)]
    assert list(disp.queues[1]) == [2]
    calls.clear()
    disp.arrive(1, 3.0)
    assert calls == [("apply", 1, 1, 0.5, True), ("start", 1, 2)]
    disp.arrive(1, 4.0)
    assert rule.seen == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert disp.rows == [
        (0, 0, 0, 0.5, True, 1.0),
        (1, 0, 1, 0.5, True, 2.0),
        (1, 1, 1, 0.5, True, 3.0),
        (1, 2, 1, 0.0, False, 4.0),
    ]
    assert disp.gradients == 4 and disp.in_flight == 0


def test_the_common_case_the_worker_goes_on_at_the_new_version():
    rule = Scripted(2, [])
    rule.decisions = [Decision(0, 0.5, True, rule._solo[0])]
    disp, calls = make(rule)
    disp.begin()
    calls.clear()
    disp.arrive(0, 1.0)
    assert calls == [("apply", 0, 0, 0.5, True), ("start", 0, 1)]


def test_cancel_comes_before_assign_and_a_cancelled_worker_starts_its_queue():
    rule = Scripted(3, [
        Decision(0, 0.0, False, (2,)),          # w0: a job for busy w2, queued at version 0
        Decision(0, 1.0, True, (0, 1), (1, 2)),  # w0 again: step, cancel w1 and w2, restart
    ], start=(0, 1, 2))  # fmt: skip
    disp, calls = make(rule)
    disp.begin()
    disp.arrive(0, 1.0)  # w0 now idle; w2 holds a queued job
    disp.assign(0)  # w0 back to work at version 0
    calls.clear()
    disp.arrive(0, 2.0)
    assert calls == [
        ("apply", 0, 0, 1.0, True),
        ("cancel", 1, 0),
        ("cancel", 2, 0),
        ("start", 2, 0),  # w2's queued job starts once its running job is cancelled
        ("start", 0, 1),
        ("start", 1, 1),
    ]
    assert disp.cancelled == 2


def test_points_are_pinned_while_a_job_needs_them_and_released_after():
    rule = Scripted(2, [])
    rule.decisions = [Decision(0, 0.5, True, rule._solo[0])]
    disp, server = with_server(rule)
    disp.begin()
    assert set(server._points) == {0}
    disp.arrive(0, 1.0)
    assert set(server._points) == {0, 1}  # x_0 still held by w1's job, x_1 by w0's new one
    disp.lose(1, 2.0)
    assert set(server._points) == {1}


def test_a_rule_whose_version_disagrees_with_the_server_is_caught_at_once():
    rule = Scripted(1, [Decision(0, 0.5, True, ())], keep_version=True)
    disp, _ = with_server(rule)
    disp.begin()
    with pytest.raises(AssertionError, match="server at version 1 but rule scripted at 0"):
        disp.arrive(0, 1.0)


def test_a_lost_worker_drops_its_jobs_and_the_rules_decision_is_carried_out():
    rule = Scripted(3, [Decision(0, 0.0, False, (1,))], on_lost=Decision(0, 0.0, False, (2, 1)))
    disp, calls = make(rule)
    disp.begin()
    disp.arrive(0, 1.0)  # a job for busy w1: queued
    calls.clear()
    assert disp.lose(1, 2.0) == Decision(0, 0.0, False, (2, 1))
    assert calls == [("apply", -1, 0, 0.0, False)]  # w2 busy (queued), w1 lost (nothing)
    assert list(disp.queues[1]) == [] and list(disp.queues[2]) == [0]
    assert disp.alive == 2 and disp.lose(1, 3.0) is None  # once only


def test_a_worker_that_goes_on_runs_its_queued_jobs_first():
    """asgd_random can draw the worker that just finished while it still has queued jobs: the
    queued (older) job starts first and the new one waits behind it."""
    rule = Scripted(2, [Decision(0, 0.5, True, (1,))])
    disp, calls = make(rule)
    disp.begin()
    disp.arrive(0, 1.0)  # a job for busy w1, queued at version 1
    rule.decisions = [Decision(1, 0.5, True, rule._solo[1])]  # w1 is told to go on
    calls.clear()
    disp.arrive(1, 2.0)
    assert calls == [("apply", 1, 0, 0.5, True), ("start", 1, 1)]
    assert list(disp.queues[1]) == [2]
