"""Check 3's reference: :func:`plain_loop`, the run of a rule on least squares written from
docs/methods.md in a plain loop that calls the rule directly and shares no code with the
engines."""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any

import numpy as np


class _PlainView:
    """The :class:`IterateView` of :func:`plain_loop`: its own list of iterates."""

    def __init__(self, xs: list[np.ndarray]):
        self.xs = xs

    def current(self):
        import torch

        return torch.from_numpy(self.xs[-1])

    def at(self, version: int):
        import torch

        return torch.from_numpy(self.xs[version])

    def distance(self, version: int) -> float:
        return float(np.linalg.norm(self.xs[-1] - self.xs[version]))


def plain_loop(exp, budget: int) -> tuple[list[tuple], list[np.ndarray]]:
    """The run of ``exp.rule`` on least squares, as docs/methods.md section 2 describes it, in
    a plain loop that shares no code with the engines (only the job-time stream and the
    samplers come from compose). Returns the rows ``(worker, version, delay, weight, step)``,
    the weights as applied, and the iterates x_0, x_1, ...

    - a heap of job completions ``(time, worker, job)``, ties broken by worker index; worker
      w's j-th job lasts the j-th draw of w's time stream and uses w's j-th sample;
    - each arrival asks the rule, then: the gradient at the job's point is added with its
      weight; a step applies the sum (a ``scales_steps`` rule's factors multiply each worker's
      gradients of the step first); the workers in ``cancel`` drop their running job; each
      worker in ``assign`` gets a job at the current version, queued FIFO if it is busy; an
      idle worker starts the head of its queue.
    """
    rule, objective = exp.rule, exp.objective
    n = rule.n
    X = objective.X.cpu().numpy().astype(np.float64)
    y = objective.y.cpu().numpy().astype(np.float64)
    xs = [objective.initial_point().cpu().numpy().astype(np.float64)]
    if rule.reads_iterates:
        rule.iterates = _PlainView(xs)
    draw, samplers = exp.times.drawer(), exp.samplers()
    heap: list[tuple[float, int, int]] = []
    running: list[tuple[int, int, Any] | None] = [None] * n  # (version, job, sample)
    queues: list[deque] = [deque() for _ in range(n)]
    jobs = [0] * n
    now = 0.0
    rows: list[list] = []
    terms: list[tuple[int, float, np.ndarray]] = []  # the open step's (worker, weight, grad)

    def start(w: int, v: int) -> None:
        jobs[w] += 1
        running[w] = (v, jobs[w], samplers[w]())
        d = draw(w)
        if d != math.inf:
            heapq.heappush(heap, (now + d, w, jobs[w]))

    def grad(x: np.ndarray, sample) -> np.ndarray:
        if sample is None:
            Xb, yb = X, y
        else:
            idx = np.asarray(sample.cpu().numpy() if hasattr(sample, "cpu") else sample)
            Xb, yb = X[idx], y[idx]
        return Xb.T @ (Xb @ x - yb) / len(yb)

    for w in rule.start():
        start(w, 0)
    open_from = 0  # the first row of the open step
    while len(rows) < budget and heap:
        t, w, j = heapq.heappop(heap)
        if running[w] is None or running[w][1] != j:
            continue  # a cancelled job
        now = t
        v, _, sample = running[w]
        running[w] = None
        d = rule.on_gradient(w, v)
        rows.append([w, v, d.delay, d.weight, bool(d.step)])
        if d.weight:
            terms.append((w, d.weight, grad(xs[v], sample)))
        if d.step:
            scale = d.scale if rule.scales_steps else ()
            if scale:
                terms = [(u, wt * scale[u], g) for u, wt, g in terms]
                for r in rows[open_from:]:
                    if r[3]:
                        r[3] = r[3] * scale[r[0]]
            x = xs[-1].copy()
            for _, wt, g in terms:
                x -= wt * g
            xs.append(x)
            terms, open_from = [], len(rows)
        for u in d.cancel:
            if running[u] is not None:
                running[u] = None
                if queues[u]:
                    start(u, queues[u].popleft())
        if running[w] is None and queues[w]:
            start(w, queues[w].popleft())
        for u in d.assign:
            if running[u] is None:
                start(u, len(xs) - 1)
            else:
                queues[u].append(len(xs) - 1)
    return [tuple(r) for r in rows], xs
