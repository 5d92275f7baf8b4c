"""The event-driven engine: a heap of job completions on a simulated clock, plus the core.

Ties in completion time are broken by worker index. A job's sample (minibatch rows or noise) and
duration are drawn when it starts, from that worker's own seeded streams; its gradient is computed
when it arrives, at the iterate of the version it was started at (and only if the rule applies
it: a discarded gradient changes nothing). Cancelled jobs are dropped lazily from the heap.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush

from pipeline.engines.base import BY_EXHAUSTION, BY_GRADIENTS, BY_TIME, RunControl, RunResult
from pipeline.engines.core import Dispatcher
from pipeline.server import ParameterServer


class SimEngine:
    name = "sim"
    time_kind = "simulated"

    def __init__(self, exp, control: RunControl, trace_iterates: bool = False):
        n = exp.rule.n
        self.rule = exp.rule
        self.objective = exp.objective
        self.times = exp.times
        self.samplers = exp.samplers()
        if self.times.n_workers != n or len(self.samplers) != n:
            raise ValueError("rule, worker times and samplers disagree on the number of workers")
        self.control = control
        self.recorder = control.recorder
        self.trace_iterates = trace_iterates
        self.server = ParameterServer(self.objective.initial_point())

    @classmethod
    def create(cls, exp, control: RunControl, trace_iterates: bool = False) -> SimEngine:
        return cls(exp, control, trace_iterates)

    def run(self) -> RunResult:
        rule, server, control, recorder = self.rule, self.server, self.control, self.recorder
        grad = self.objective.grad
        next_time = self.times.next
        samplers = self.samplers
        n = rule.n
        heap: list[tuple[float, int, int]] = []
        running = [-1] * n  # id of each worker's running job
        job_sample: list[object] = [None] * n
        jid = 0
        now = 0.0
        clock = [0.0]  # the time jobs start at (the event being handled)

        def start_job(w: int, v: int) -> None:
            nonlocal jid
            jid += 1
            running[w] = jid
            job_sample[w] = samplers[w]()
            d = next_time(w)
            if d != math.inf:
                heappush(heap, (clock[0] + d, w, jid))

        def cancel_job(w: int, v: int) -> None:
            running[w] = -1
            job_sample[w] = None

        def apply(w: int, v: int, weight: float, step: bool) -> None:
            if weight:
                server.add(weight, grad(server.point(v), job_sample[w]), step)
            elif step:
                server.step()
            if w >= 0:
                job_sample[w] = None

        core = Dispatcher(rule, start_job, cancel_job, apply, server)
        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time
        iterates = [server.x] if self.trace_iterates else None
        flush_at = recorder.flush_every
        status, stopped_by = "failed", BY_EXHAUSTION
        control.start(server.x)
        try:
            core.begin()
            while heap:
                t, w, j = heappop(heap)
                if running[w] != j:
                    continue  # a cancelled job
                if budget_t is not None and t > budget_t:
                    now = budget_t
                    stopped_by = BY_TIME
                    break
                now = clock[0] = t
                running[w] = -1
                d = core.arrive(w, t)
                if len(core.rows) >= flush_at:
                    recorder.write_events(core.rows)
                    core.rows = []
                if d.step:
                    if iterates is not None:
                        iterates.append(server.x)
                    if control.stepped(server.x, server.version, core.gradients, now):
                        stopped_by = None  # diverged: control.finish says so
                        break
                if core.gradients == budget_g:
                    stopped_by = BY_GRADIENTS
                    break
            status = "finished"
        finally:
            recorder.write_events(core.rows)
            core.rows = []
            control.finish(
                server.x,
                server.version,
                core.gradients,
                now,
                status,
                stopped_by,
                cancelled=core.cancelled,
                iterates=iterates,
            )
        return control.result
