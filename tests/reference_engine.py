"""The event engine as it was before the schedule/replay split, kept as a test reference: one
heap of completions, the core, and each gradient computed and applied the moment it arrives."""

from __future__ import annotations

import math
from heapq import heappop, heappush

from pipeline.core.server import ParameterServer
from pipeline.engines.base import BY_EXHAUSTION, BY_GRADIENTS, BY_TIME, RunControl, RunResult
from pipeline.engines.dispatch import Dispatcher


class EventLoopEngine:
    name = "sim"
    time_kind = "simulated"

    def __init__(self, exp, control: RunControl, trace_iterates: bool = False):
        self.rule, self.objective, self.times = exp.rule, exp.objective, exp.times
        self.samplers = exp.samplers()
        self.control, self.recorder = control, control.recorder
        self.trace_iterates = trace_iterates
        self.server = ParameterServer(self.objective.initial_point())

    def run(self) -> RunResult:
        rule, server, control = self.rule, self.server, self.control
        grad, next_time, samplers, n = self.objective.grad, self.times.next, self.samplers, rule.n
        heap: list = []
        running = [-1] * n
        sample: list = [None] * n
        jid = 0
        clock = [0.0]

        def start_job(w: int, v: int) -> None:
            nonlocal jid
            jid += 1
            running[w] = jid
            sample[w] = samplers[w]()
            d = next_time(w)
            if d != math.inf:
                heappush(heap, (clock[0] + d, w, jid))

        def cancel_job(w: int, v: int) -> None:
            running[w] = -1

        def apply(w: int, v: int, weight: float, step: bool) -> None:
            if weight:
                server.add(weight, grad(server.point(v), sample[w]), step)
            elif step:
                server.step()

        core = Dispatcher(rule, start_job, cancel_job, apply, server)
        budget_g = control.budget_gradients or -1
        iterates = [server.x] if self.trace_iterates else None
        stopped_by, now = BY_EXHAUSTION, 0.0
        control.start(server.x)
        core.begin()
        while heap:
            t, w, j = heappop(heap)
            if running[w] != j:
                continue
            if control.budget_time is not None and t > control.budget_time:
                now, stopped_by = control.budget_time, BY_TIME
                break
            now = clock[0] = t
            running[w] = -1
            d = core.arrive(w, t)
            if d.step:
                if iterates is not None:
                    iterates.append(server.x)
                if control.stepped(server.x, server.version, core.gradients, now):
                    stopped_by = None
                    break
            if core.gradients == budget_g:
                stopped_by = BY_GRADIENTS
                break
        self.recorder.write_events(core.rows)
        return control.finish(
            server.x, server.version, core.gradients, now, "finished", stopped_by,
            cancelled=core.cancelled, iterates=iterates,
        )  # fmt: skip
