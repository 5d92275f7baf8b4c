"""The event-driven engine: a priority queue of job completions on a simulated clock.

Ties in completion time are broken by worker index. A job's sample (minibatch rows or noise) and
duration are drawn when it starts, from that worker's own seeded streams; its gradient is computed
when it arrives, at the iterate of the version it was started at (and only if the rule applies
it: a discarded gradient changes nothing). Cancelled jobs are dropped lazily from the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from heapq import heappop, heappush

from models.objectives import Objective
from pipeline.engines.base import EvalSchedule, RunResult
from pipeline.methods.base import ServerRule
from pipeline.progress import Progress
from pipeline.records import RunRecorder
from pipeline.server import ParameterServer
from pipeline.topology import JobTimes


class SimEngine:
    name = "sim"

    def __init__(
        self,
        rule: ServerRule,
        objective: Objective,
        times: JobTimes,
        samplers: Sequence[Callable[[], object]],
        recorder: RunRecorder,
        schedule: EvalSchedule,
        budget_gradients: int | None = None,
        budget_time: float | None = None,
        progress: bool = False,
        trace_iterates: bool = False,
    ):
        if budget_gradients is None and budget_time is None:
            raise ValueError("set budget.gradients or budget.time")
        n = rule.n
        if times.n_workers != n or len(samplers) != n:
            raise ValueError("rule, worker times and samplers disagree on the number of workers")
        self.rule = rule
        self.objective = objective
        self.times = times
        self.samplers = list(samplers)
        self.recorder = recorder
        self.schedule = schedule
        self.budget_gradients = budget_gradients
        self.budget_time = budget_time
        self.progress = progress
        self.trace_iterates = trace_iterates
        self.server = ParameterServer(objective.initial_point())

    def run(self) -> RunResult:
        rule, server, recorder, schedule = self.rule, self.server, self.recorder, self.schedule
        grad = self.objective.grad
        next_time = self.times.next
        samplers = self.samplers
        n = rule.n
        heap: list[tuple[float, int, int]] = []
        running = [-1] * n  # id of each worker's running job, -1 when idle
        job_version = [0] * n
        job_sample: list[object] = [None] * n
        queues: list[deque | None] = [None] * n
        jid = 0
        now = 0.0
        gradients = 0
        cancelled = 0
        budget_g = self.budget_gradients if self.budget_gradients is not None else -1
        budget_t = self.budget_time
        iterates = [server.x] if self.trace_iterates else None
        bar = Progress(
            self.budget_gradients if self.budget_gradients is not None else None,
            f"{rule.name} sim",
            self.progress,
        )

        def start(w: int, v: int) -> None:
            nonlocal jid
            jid += 1
            running[w] = jid
            job_version[w] = v
            job_sample[w] = samplers[w]()
            heappush(heap, (now + next_time(w), w, jid))

        def assign(w: int) -> None:
            v = server.pin()
            if running[w] < 0:
                start(w, v)
            else:
                q = queues[w]
                if q is None:
                    q = queues[w] = deque()
                q.append(v)

        status = "finished"
        events = recorder.buffer()  # rows (worker, version, delay, lr, time), flushed in chunks
        flush_at = recorder.flush_every
        every = schedule.every
        next_eval = every
        schedule.record(server.x, 0, 0, 0.0)
        try:
            for w in rule.start():
                assign(w)
            while heap:
                t, w, j = heappop(heap)
                if running[w] != j:
                    continue  # a cancelled job
                if budget_t is not None and t > budget_t:
                    now = budget_t
                    break
                now = t
                running[w] = -1
                v = job_version[w]
                delay, weight, step, assigned, cancel = rule.on_gradient(w, v)
                if weight:
                    server.add(weight, grad(server.point(v), job_sample[w]), step)
                elif step:
                    server.step()
                server.release(v)
                job_sample[w] = None
                gradients += 1
                events.append((w, v, delay, weight, t))
                if len(events) >= flush_at:
                    recorder.flush_events()
                    events = recorder.buffer()
                if cancel:
                    for u in cancel:
                        if running[u] >= 0:
                            running[u] = -1
                            job_sample[u] = None
                            server.release(job_version[u])
                            cancelled += 1
                            q = queues[u]
                            if q:
                                start(u, q.popleft())
                for u in assigned:
                    assign(u)
                if running[w] < 0:
                    q = queues[w]
                    if q:
                        start(w, q.popleft())
                if step:
                    if iterates is not None:
                        iterates.append(server.x)
                    if server.version >= next_eval:
                        next_eval = server.version + every
                        schedule.record(server.x, server.version, gradients, now)
                        if schedule.diverged:
                            status = "diverged"
                            break
                        bar.update_to(gradients)
                if gradients == budget_g:
                    break
        except BaseException:
            status = "failed"
            raise
        finally:
            bar.close()
            final = {}
            if status != "failed":
                if schedule.last_update != server.version:
                    final = schedule.record(server.x, server.version, gradients, now)
                else:
                    final = dict(recorder.last_history or {})
                if schedule.diverged:
                    status = "diverged"
            self.result = RunResult(
                x=server.x,
                status=status,
                gradients=gradients,
                updates=server.version,
                time=now,
                cancelled=cancelled,
                final=final,
                iterates=iterates,
            )
        return self.result
