"""The engine-independent core: carries out a server rule's decisions.

An engine adds only its clock and its transport. It tells the :class:`Dispatcher` that worker w's
running job finished (:meth:`Dispatcher.arrive`); the dispatcher asks the rule, has the gradient
applied (through the engine's ``apply``), then carries out the rest of the decision in the order
of :mod:`pipeline.core.methods.base`: cancellations, then assignments (a job for a busy worker
waits in that worker's FIFO queue). Starting and cancelling a job on a worker are the engine's
(``start_job``, ``cancel_job``): a heap entry on a simulated clock, or a message to a process.

Every arrival becomes an event row ``(worker, version, delay, weight, step, time)``. For a rule
that ``scales_steps``, a step's per-worker factors rewrite the weights of the rows of that step
(:meth:`Dispatcher._rescale`), so the rows say what was applied; an engine must not take those
rows away before the step (:attr:`Dispatcher.open_rows` says how many are open).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pipeline.core.methods.base import Decision, ServerRule
from pipeline.core.server import ParameterServer


class Dispatcher:
    """Per-worker running job and FIFO queue, cancellation, lost workers, event rows.

    With a ``server``, the point of every job is pinned at assignment and released when the job
    ends, and after every step the core checks that the rule's version and the server's agree.
    """

    def __init__(
        self,
        rule: ServerRule,
        start_job: Callable[[int, int], None],
        cancel_job: Callable[[int, int], None] | None = None,
        apply: Callable[[int, int, float, bool], None] | None = None,
        server: ParameterServer | None = None,
    ):
        n = rule.n
        self.rule = rule
        self._on_gradient = rule.on_gradient
        self._solo = rule._solo  # the rules' own (w,) tuples: "w goes on" is an identity test
        self.server = server
        self.start_job = start_job
        self.cancel_job = cancel_job
        self.apply = apply
        self.busy = [False] * n
        self.job_version = [0] * n
        self.queues: list[deque | None] = [None] * n
        self.lost = [False] * n
        self.rows: list[tuple] = []  # (worker, version, delay, weight, step, time)
        self.gradients = 0
        self.cancelled = 0
        self.scales = rule.scales_steps
        self.open_rows = 0  # scales_steps: rows since the last step (their weights may change)
        self.scale: tuple[float, ...] = ()  # the factors of the step being carried out

    # -- jobs ------------------------------------------------------------------------------------
    def begin(self) -> None:
        for w in self.rule.start():
            self.assign(w)

    def assign(self, w: int) -> None:
        """A new job at the current version for worker w (queued if w is busy)."""
        if w < 0:  # (w >= n fails on the lists below)
            raise IndexError(f"rule {self.rule.name} assigned a job to worker {w}")
        if self.lost[w]:  # the rule gave a job to a lost worker: nothing to start
            return
        v = self.server.pin() if self.server is not None else self.rule.version
        if self.busy[w]:
            q = self.queues[w]
            if q is None:
                q = self.queues[w] = deque()
            q.append(v)
        else:
            self.busy[w] = True
            self.job_version[w] = v
            self.start_job(w, v)

    def _next_queued(self, w: int) -> None:
        q = self.queues[w]
        if q:
            v = q.popleft()
            self.busy[w] = True
            self.job_version[w] = v
            self.start_job(w, v)

    def _release(self, v: int) -> None:
        if self.server is not None:
            self.server.release(v)

    # -- events ----------------------------------------------------------------------------------
    def arrive(self, w: int, t: float) -> Decision:
        """Worker w's running job finished at time t: decide, apply, cancel, assign. (The hot
        path of every engine: the common case, one new job for w, takes no extra call.)"""
        v = self.job_version[w]
        busy = self.busy
        busy[w] = False
        d = self._on_gradient(w, v)
        self.gradients += 1
        delay, weight, step, assigned, cancel, scale = d
        applied = weight  # scales_steps: the rows record it times the step's factor
        if self.scales:
            if step:
                self.scale = scale
                if scale:
                    self._rescale(scale)
                    applied = weight * scale[w] if weight else weight
                self.open_rows = 0
            else:
                self.open_rows += 1
        if self.apply is not None:
            self.apply(w, v, weight, step)
        server = self.server
        if server is not None:
            server.release(v)
            if step and server.version != self.rule.version:
                self._out_of_step()
        self.rows.append((w, v, delay, applied, step, t))
        if cancel:
            self._cancel(cancel)
        elif assigned is self._solo[w] and not self.queues[w]:  # w goes on at the current version
            nv = server.pin() if server is not None else self.rule.version
            busy[w] = True
            self.job_version[w] = nv
            self.start_job(w, nv)
            return d
        if not busy[w]:
            self._next_queued(w)  # w's queued jobs are older than any it is given now: FIFO
        for u in assigned:
            self.assign(u)
        return d

    def carry_out(self, d: Decision, w: int, v: int, t: float) -> None:
        """Carry out a decision that is not an arrival (w = -1: a lost worker's)."""
        delay, weight, step, assigned, cancel, scale = d
        if self.scales and step:
            self.scale = scale
            if scale:
                self._rescale(scale)
            self.open_rows = 0
        if self.apply is not None:
            self.apply(w, v, weight, step)
        if step and self.server is not None and self.server.version != self.rule.version:
            self._out_of_step()
        if cancel:
            self._cancel(cancel)
        for u in assigned:
            self.assign(u)

    def _rescale(self, scale: tuple[float, ...]) -> None:
        """The open step's rows get their worker's factor (the weights as applied)."""
        rows, k = self.rows, self.open_rows
        if len(rows) < k:
            raise AssertionError(f"{k} rows of the open step were taken before the step")
        if len(scale) != self.rule.n:
            raise ValueError(
                f"rule {self.rule.name}: Decision.scale has {len(scale)} factors for "
                f"{self.rule.n} workers"
            )
        for i in range(len(rows) - k, len(rows)):
            r = rows[i]
            if r[3]:
                rows[i] = (r[0], r[1], r[2], r[3] * scale[r[0]], r[4], r[5])

    def _cancel(self, workers: tuple[int, ...]) -> None:
        for u in workers:
            if self.busy[u]:
                self.busy[u] = False
                self.cancelled += 1
                if self.cancel_job is not None:
                    self.cancel_job(u, self.job_version[u])
                self._release(self.job_version[u])
                self._next_queued(u)

    def _out_of_step(self) -> None:
        raise AssertionError(
            f"server at version {self.server.version} but rule {self.rule.name} at "
            f"{self.rule.version}"
        )

    def lose(self, w: int, t: float) -> Decision | None:
        """Worker w is gone: its running and queued jobs are dropped, the rule is told (it may
        raise RuntimeError when it cannot go on), and its decision is carried out."""
        if self.lost[w]:
            return None
        self.lost[w] = True
        if self.busy[w]:
            self.busy[w] = False
            self._release(self.job_version[w])
        q = self.queues[w]
        while q:
            self._release(q.popleft())
        d = self.rule.on_worker_lost(w)
        if d is not None:
            self.carry_out(d, -1, self.rule.version, t)
        return d

    @property
    def in_flight(self) -> int:
        return sum(self.busy)

    @property
    def alive(self) -> int:
        return len(self.lost) - sum(self.lost)
