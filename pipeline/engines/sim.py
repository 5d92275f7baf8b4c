"""The event engine: a simulated clock, in two passes per chunk of events.

Every server rule decides from (worker, version) alone, never from gradient values, so the whole
schedule of a run (who arrives when, at which version, with which weight, which steps and
cancellations) does not depend on the iterates. So:

1. **schedule**: a heap of job completions plus the core (:class:`Dispatcher`) produce the event
   rows of a chunk, without a single gradient. Ties in completion time are broken by worker
   index. Worker w's j-th job gets the j-th duration of w's seeded stream and sample j of w's
   sample stream; cancelled jobs are dropped lazily from the heap.
2. **replay** (:class:`Replay`): the iterates, computed from the rows. An arrival's point always
   precedes it, so every step whose gradients only need known iterates can be computed at once:
   where it pays (a modelled cost, :meth:`Objective.batch_pays`) the gradients of many steps
   come from one batched call and the steps are applied as a cumulative sum; elsewhere one by
   one. Evaluation (never charged to simulated time) and divergence happen here; a diverged run
   stops at that step and its records end there.

Records are written from each chunk's arrays. Memory stays bounded: a chunk's rows, plus the
iterates that jobs in flight or later rows still need.
"""

from __future__ import annotations

import math
from heapq import heappop, heappush, heapreplace

import numpy as np
import torch

from pipeline.engines.base import BY_EXHAUSTION, BY_GRADIENTS, BY_TIME, RunControl, RunResult
from pipeline.engines.core import Dispatcher

CHUNK_EVENTS = 1 << 16
CHUNK_BYTES = 64 << 20  # a chunk's iterates and gradients stay under this (large models)


class SimEngine:
    name = "sim"
    time_kind = "simulated"

    def __init__(self, exp, control: RunControl, trace_iterates: bool = False):
        n = exp.rule.n
        self.exp = exp
        self.rule = exp.rule
        self.objective = exp.objective
        self.times = exp.times
        if self.times.n_workers != n or len(exp.rows) != n:
            raise ValueError("rule, worker times and data shards disagree on the number of workers")
        self.control = control
        self.recorder = control.recorder
        self.trace_iterates = trace_iterates
        x0 = self.objective.initial_point()
        per_event = max(1, x0.numel() * x0.element_size() * 3)
        self.chunk = int(min(CHUNK_EVENTS, max(256, CHUNK_BYTES // per_event)))
        self.replay = Replay(exp, control, x0, trace_iterates)

    @classmethod
    def create(cls, exp, control: RunControl, trace_iterates: bool = False) -> SimEngine:
        return cls(exp, control, trace_iterates)

    @property
    def server_x(self) -> torch.Tensor:
        return self.replay.x

    def run(self) -> RunResult:
        rule, control, replay = self.rule, self.control, self.replay
        next_time = self.times.next
        n = rule.n
        heap: list[tuple[float, int, int]] = []
        running = [0] * n  # number of each worker's running job (0: none)
        started = [0] * n  # jobs started per worker: the job's sample number
        now = 0.0
        state = {"clock": 0.0, "top": False}  # the event being handled; its entry still on top
        cancels: list[int] = []  # the row at which each cancellation happened

        def start_job(w: int, v: int) -> None:
            s = started[w] = started[w] + 1
            running[w] = s
            d = next_time(w)
            if d == math.inf:  # a trace that ran out: this job never ends
                return
            entry = (state["clock"] + d, w, s)
            if state["top"]:  # reuse the handled event's slot: one sift instead of two
                state["top"] = False
                heapreplace(heap, entry)
            else:
                heappush(heap, entry)

        def cancel_job(w: int, v: int) -> None:
            running[w] = 0
            cancels.append(done + len(core.rows) - 1)

        core = Dispatcher(rule, start_job, cancel_job)
        budget_g = control.budget_gradients if control.budget_gradients is not None else -1
        budget_t = control.budget_time
        status, stopped_by = "failed", BY_EXHAUSTION
        done = 0  # rows of earlier chunks
        control.start(replay.x)
        try:
            core.begin()
            arrive = core.arrive
            while True:
                seqs: list[int] = []
                rows = core.rows
                limit = self.chunk
                ended = True
                while heap:
                    t, w, s = heap[0]
                    if running[w] != s:
                        heappop(heap)  # a cancelled job
                        continue
                    if budget_t is not None and t > budget_t:
                        now = budget_t
                        stopped_by = BY_TIME
                        break
                    now = state["clock"] = t
                    running[w] = 0
                    seqs.append(s)
                    state["top"] = True
                    arrive(w, t)
                    if state["top"]:
                        state["top"] = False
                        heappop(heap)
                    if core.gradients == budget_g:
                        stopped_by = BY_GRADIENTS
                        break
                    if len(rows) >= limit:
                        ended = False
                        break
                diverged_at = replay.run(rows, seqs, done, self._in_flight(core))
                keep = len(rows) if diverged_at is None else diverged_at + 1
                self.recorder.write_columns(replay.columns(keep))
                if diverged_at is not None:
                    stopped_by = None
                    now = rows[diverged_at][5]
                    done += keep
                    break
                done += keep
                core.rows = []
                if ended:
                    break
            status = "finished"
        finally:
            # a run that diverged ends at that row: so do its counts
            cancelled = core.cancelled if stopped_by else sum(r < done for r in cancels)
            self.control.finish(
                replay.x,
                replay.version,
                done,
                now,
                status,
                stopped_by,
                cancelled=cancelled,
                iterates=replay.iterates,
            )
        return control.result

    @staticmethod
    def _in_flight(core: Dispatcher) -> set[int]:
        """Versions that jobs running or queued at this moment were given."""
        out = {v for v, b in zip(core.job_version, core.busy, strict=True) if b}
        for q in core.queues:
            if q:
                out.update(q)
        return out


class Replay:
    """Computes the iterates of a schedule, chunk by chunk (see the module's doc)."""

    def __init__(self, exp, control: RunControl, x0: torch.Tensor, trace: bool):
        self.objective = exp.objective
        self.control = control
        self.x = x0
        self.version = 0
        self.iterates = [x0] if trace else None
        self.device = x0.device
        self.store: dict[int, torch.Tensor] = {}  # versions that later jobs still need
        self.carry: torch.Tensor | None = None  # gradients of a step the chunk did not finish
        obj = self.objective
        self.random_access = obj.random_access
        self.samplers = None if self.random_access else exp.samplers()
        self.drawn = [0] * exp.rule.n  # samples drawn so far from each worker's sampler
        self.batched = obj.batch_pays(exp.cfg.batch_size)
        self._cols = None

    # -- samples ---------------------------------------------------------------------------------
    def _sample(self, w: int, s: int):
        """Sample s of worker w, from its in-order stream (skipping cancelled jobs' samples)."""
        sampler = self.samplers[w]
        z = None
        while self.drawn[w] < s:
            z = sampler()
            self.drawn[w] += 1
        return z

    def _samples(self, W: np.ndarray, S: np.ndarray):
        if self.random_access:
            return self.objective.samples_at(W, S)
        return self.objective.stack_samples(
            [self._sample(w, s) for w, s in zip(W.tolist(), S.tolist(), strict=True)]
        )

    # -- a chunk -----------------------------------------------------------------------------------
    def columns(self, keep: int) -> tuple:
        W, V, D, WT, T = self._cols
        return W[:keep], V[:keep], D[:keep], WT[:keep], T[:keep]

    def run(self, rows: list[tuple], seqs: list[int], done: int, in_flight: set[int]):
        """Replay a chunk's rows; returns the index of the row at which the run diverged."""
        if not rows:
            self._cols = tuple(np.zeros(0) for _ in range(5))
            return None
        W, V, D, WT, ST, T = (np.array(c) for c in zip(*rows, strict=True))
        self._cols = (W, V, D, WT, T)
        S = np.array(seqs)
        applied = WT != 0
        if self.batched:
            return self._batched(W, V, WT, ST, T, S, applied, done, in_flight)
        return self._one_by_one(rows, S, applied, done, in_flight)

    def _keep_needed(self, needed: set[int]) -> None:
        self.store = {v: x for v, x in self.store.items() if v in needed}

    def _evaluate(self, x, version: int, gradients: int, t: float) -> bool:
        if self.iterates is not None:
            self.iterates.append(x)
        return self.control.stepped(x, version, gradients, t)

    def _one_by_one(self, rows, S, applied, done, in_flight):
        grad = self.objective.grad
        used = {int(v) for v in np.asarray([r[1] for r in rows])[applied]}
        keep_later = used | in_flight
        last_use: dict[int, int] = {}
        for i in np.flatnonzero(applied).tolist():
            last_use[rows[i][1]] = i
        samples = None
        if self.random_access:
            idx = np.flatnonzero(applied)
            W = np.array([rows[i][0] for i in idx.tolist()])
            samples = self.objective.samples_at(W, S[idx]) if len(idx) else None
            rank = np.cumsum(applied) - 1
        x, version, store, buf = self.x, self.version, self.store, self.carry
        if version in keep_later:
            store[version] = x  # jobs started at it during this chunk may need it after a step
        for i, (w, v, _, weight, step, t) in enumerate(rows):
            if weight:
                point = x if v == version else store[v]
                z = samples[rank[i]] if samples is not None else (
                    None if self.random_access else self._sample(w, int(S[i]))
                )  # fmt: skip
                g = grad(point, z)
                if buf is None:
                    buf = g.mul_(weight)
                else:
                    buf.add_(g, alpha=weight)
                if last_use.get(v) == i and v not in in_flight and v != version:
                    del store[v]
            if step:
                x = x - buf if buf is not None else x
                buf = None
                version += 1
                if version in keep_later:
                    store[version] = x
                if self._evaluate(x, version, done + i + 1, t):
                    self.x, self.version, self.carry = x, version, None
                    return i
        self.x, self.version, self.carry = x, version, buf
        self._keep_needed(in_flight | {version})
        return None

    def _batched(self, W, V, WT, ST, T, S, applied, done, in_flight):
        """Steps whose points are all known, as batched gradients and a cumulative sum."""
        obj, dev = self.objective, self.device
        m = len(W)
        steps = np.flatnonzero(ST)  # row of each step in the chunk
        n_steps = len(steps)
        # the step each row contributes to (0-based in this chunk; n_steps: after the chunk)
        contrib = np.cumsum(ST) - ST
        K0 = self.version
        # the newest point each step needs; steps are computable once that point is known
        need = np.full(n_steps + 1, -1, dtype=np.int64)
        if applied.any():
            np.maximum.at(need, contrib[applied], V[applied])
        reach = np.maximum.accumulate(need[:n_steps]) if n_steps else need[:0]
        versions = np.arange(K0 + 1, K0 + n_steps + 1)
        needed_later = set(V[applied].tolist()) | in_flight
        # point of each applied row: a known iterate; new iterates land here as they come
        table = dict(self.store)
        table[K0] = self.x
        x = self.x
        carry = self.carry
        k = 0  # next step to compute
        r0 = 0  # first row of step k
        every = self.control.every
        while k < n_steps:
            k1 = int(np.searchsorted(reach, K0 + k, side="right"))  # steps (k..k1] computable
            r1 = steps[k1 - 1] + 1
            rows = np.flatnonzero(applied[r0:r1]) + r0
            sums = torch.zeros((k1 - k, x.numel()), dtype=x.dtype, device=dev)
            if len(rows):
                pts = torch.stack([table[v] for v in V[rows].tolist()])
                g = obj.grad_batch(pts, self._samples(W[rows], S[rows]))
                g.mul_(torch.as_tensor(WT[rows], dtype=x.dtype, device=dev)[:, None])
                sums.index_add_(0, torch.as_tensor(contrib[rows] - k, device=dev), g)
            if carry is not None:
                sums[0] += carry
                carry = None
            xs = torch.cumsum(torch.cat([x[None], sums.neg_()]), 0)[1:]
            for j in range(k1 - k):
                version = K0 + k + j + 1
                if version in needed_later:
                    table[version] = xs[j]
            x = xs[-1]
            # evaluations due in these steps (and every step when iterates are traced)
            due = versions[k:k1]
            traced = len(self.iterates) if self.iterates is not None else 0
            if self.iterates is not None:
                self.iterates.extend(xs.unbind(0))
            for j in np.flatnonzero(due % every == 0).tolist() if every > 1 else range(k1 - k):
                row = steps[k + j]
                if self.control.stepped(xs[j], int(due[j]), done + row + 1, float(T[row])):
                    self.x, self.version, self.carry = xs[j], int(due[j]), None
                    if self.iterates is not None:
                        del self.iterates[traced + j + 1 :]
                    return int(row)
            k, r0 = k1, r1
        # rows after the last step: their gradients wait for the next chunk's first step
        rows = np.flatnonzero(applied[r0:m]) + r0
        if len(rows):
            pts = torch.stack([table[v] for v in V[rows].tolist()])
            g = obj.grad_batch(pts, self._samples(W[rows], S[rows]))
            g.mul_(torch.as_tensor(WT[rows], dtype=x.dtype, device=dev)[:, None])
            tail = g.sum(0)
            carry = tail if carry is None else carry + tail
        self.x, self.version, self.carry = x, K0 + n_steps, carry
        self.store = {v: p for v, p in table.items() if v in in_flight and v != self.version}
        return None
