"""The event engine's schedule in bulk, for a :class:`~pipeline.core.methods.base.DelayRule`
on emulated worker times (:class:`~pipeline.core.topology.JobTimes`).

Such a rule's worker goes on at once after every arrival, so worker w's arrivals are the partial
sums of its own stream of durations, c_{w,j} = c_{w,j-1} + d_{w,j} (the same additions, in the
same order, as the heap's ``clock + d``), and the arrivals of a run are the merge of the n
workers' streams, in time order with ties broken by worker index, as the heap gives them. This
module computes that merge a chunk at a time with arrays, and the rule's decisions for the whole
chunk from the versions alone:

- **arrivals**: a pool of completions already drawn. Every completion earlier than
  ``G = min_w last_w`` (the last drawn completion of each worker) is in the pool, since a worker's
  later completions come after its last drawn one; the chunk is the first K of them sorted by
  (time, worker). The pool is topped up by drawing, for the workers whose last completion is
  before a horizon, about as many durations as reach it (at most a block each).
- **decisions**: if every arrival of the chunk is a step, arrival k (0-based in the chunk)
  happens at version V0 + k and its job was given at V0 + p + 1, p the worker's previous arrival
  in the chunk (or at the version its running job was given before the chunk): delays and
  versions are differences of indices, and the weights come from ``rule.weights_for`` for the
  chunk at once. If a weight is 0 (a discarded gradient is no step, so later versions shift),
  the chunk's versions are counted one arrival at a time instead.

The rows, sample numbers and versions in flight are those of the heap and
:class:`~pipeline.engines.dispatch.Dispatcher`, byte for byte (tests/engines/test_bulk.py).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.methods.base import DelayRule
from pipeline.core.topology import BulkDraws, JobTimes

BLOCK = 256  # durations drawn per worker from its stream at a time, at most
MAX_BLOCK_BYTES = 64 << 20  # many workers: smaller blocks, so the buffer stays under this


def bulk_applies(rule, times) -> bool:
    """Whether the schedule of ``rule`` on ``times`` can be computed in bulk: a
    :class:`DelayRule` that goes on, with its own ``on_gradient``, starting distinct workers, on
    emulated job times."""
    return (
        isinstance(rule, DelayRule)
        and rule.goes_on
        and type(rule).on_gradient is DelayRule.on_gradient
        and not rule.scales_steps
        and not rule.reads_iterates
        and type(times) is JobTimes
    )


class BulkSchedule:
    """Arrivals and decisions of a :class:`DelayRule`'s run, a chunk at a time (module doc)."""

    def __init__(self, rule: DelayRule, times: JobTimes):
        n = rule.n
        self.rule = rule
        block = BLOCK
        while block > 4 and n * block * 8 > MAX_BLOCK_BYTES:
            block //= 2
        self.block = block
        self.draws = BulkDraws(times, block)
        self.rate = 1.0 / times.taus  # arrivals per unit of time, to size the horizon
        self.last = np.full(n, np.inf)  # each worker's last drawn completion (inf: never runs)
        self.drawn = np.zeros(n, dtype=np.int64)  # completions drawn per worker
        self.jobv = np.zeros(n, dtype=np.int64)  # the version of each worker's running job
        self.pool_t = np.zeros(0)
        self.pool_w = np.zeros(0, dtype=np.int64)
        self.pool_s = np.zeros(0, dtype=np.int64)
        start = np.asarray(rule.start(), dtype=np.int64)
        if len(np.unique(start)) != len(start) or (
            len(start) and not 0 <= start.min() <= start.max() < n
        ):
            raise ValueError(f"rule {rule.name}: start() must give distinct workers in [0, {n})")
        self.started = np.zeros(n, dtype=bool)
        self.started[start] = True
        self.total_rate = float(self.rate[start].sum()) if len(start) else 1.0
        self.last[start] = 0.0
        if len(start):
            self._draw(start, np.ones(len(start), dtype=np.int64))

    # -- arrivals ----------------------------------------------------------------------------------
    def _draw(self, workers: np.ndarray, counts: np.ndarray) -> None:
        """The next ``counts[i]`` completions of each ``workers[i]`` into the pool."""
        order = np.argsort(-counts, kind="stable")
        ws, cs = workers[order], counts[order]
        t = self.last[ws]  # a copy: c_j = c_{j-1} + d_j, added in order, one column at a time
        drawn = self.drawn[ws]
        ts, wl, sl = [self.pool_t], [self.pool_w], [self.pool_s]
        for j, d in enumerate(self.draws.columns(ws, cs), 1):
            a = len(d)
            t[:a] += d
            ts.append(t[:a].copy())
            wl.append(ws[:a])
            sl.append(drawn[:a] + j)
        self.pool_t, self.pool_w, self.pool_s = (np.concatenate(x) for x in (ts, wl, sl))
        self.last[ws] = t
        self.drawn[ws] = drawn + cs

    def _fill(self, k: int, budget_t: float) -> float:
        """Draw until the pool holds ``k`` completions before G (or every one up to
        ``budget_t``); returns G."""
        while True:
            g = float(self.last.min())
            if g > budget_t or g == np.inf:
                return g
            have = int(np.count_nonzero(self.pool_t < g))
            if have >= k:
                return g
            horizon = g + 1.25 * (k - have) / self.total_rate
            act = np.flatnonzero(self.last <= horizon)
            need = np.ceil((horizon - self.last[act]) * self.rate[act]).astype(np.int64) + 1
            self._draw(act, np.clip(need, 1, self.block))

    def arrivals(self, k: int, budget_t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next (at most) ``k`` arrivals up to ``budget_t``: (workers, times, sample
        numbers); fewer than ``k`` only when the run's time is up."""
        g = self._fill(k, budget_t)
        idx = np.flatnonzero(self.pool_t < g) if g != np.inf else np.arange(len(self.pool_t))
        t = self.pool_t[idx]
        order = np.argsort(t)
        ts = t[order]
        if np.any(ts[1:] == ts[:-1]):  # ties: by worker (a worker's own by sample number)
            order = np.lexsort((self.pool_s[idx], self.pool_w[idx], t))
        order = order[:k]
        take = idx[order]
        cut = int(np.searchsorted(t[order], budget_t, side="right"))  # t sorted: <= budget_t
        take = take[:cut]
        W, T, S = self.pool_w[take], self.pool_t[take], self.pool_s[take]
        rest = np.ones(len(self.pool_t), dtype=bool)
        rest[take] = False
        self.pool_t, self.pool_w, self.pool_s = (a[rest] for a in (self.pool_t, self.pool_w,
                                                                    self.pool_s))  # fmt: skip
        return W, T, S

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rule's decisions on arrivals ``W`` (in order): (versions, delays, weights,
        steps); the rule's version and the jobs' versions move on past them."""
        rule, K = self.rule, len(W)
        v0 = rule.version
        if not K:
            e = np.zeros(0, dtype=np.int64)
            return e, e, np.zeros(0), np.zeros(0, dtype=bool)
        order = np.argsort(W, kind="stable")
        ws = W[order]
        same = ws[1:] == ws[:-1]
        prev = np.full(K, -1, dtype=np.int64)
        prev[order[1:][same]] = order[:-1][same]
        V = np.where(prev >= 0, v0 + prev + 1, self.jobv[W])
        D = v0 + np.arange(K, dtype=np.int64) - V
        WT = rule.weights_for(W, D)
        if WT.all():  # every arrival a step
            last = order[np.concatenate([~same, [True]])]
            self.jobv[W[last]] = v0 + last + 1
            rule.version = v0 + K
            return V, D, WT, np.ones(K, dtype=bool)
        return self._one_by_one(W)

    def _one_by_one(self, W: np.ndarray):
        """Versions counted arrival by arrival (some gradient of the chunk is discarded)."""
        rule, jobv, f = self.rule, self.jobv, self.rule.weight_for
        K = len(W)
        V, D = np.empty(K, dtype=np.int64), np.empty(K, dtype=np.int64)
        WT, ST = np.empty(K), np.empty(K, dtype=bool)
        version = rule.version
        for i, w in enumerate(W.tolist()):
            v = int(jobv[w])
            d = version - v
            weight = f(w, d)
            V[i], D[i] = v, d
            if weight:
                version += 1
                WT[i], ST[i] = weight, True
            else:
                WT[i], ST[i] = 0.0, False
            jobv[w] = version
        rule.version = version
        return V, D, WT, ST

    def in_flight(self) -> np.ndarray:
        """The version of each job running now (every started worker has one)."""
        return self.jobv[self.started]
