"""An independent reference for the event engine, written from docs/methods.md alone.

It shares no code with what it checks: no engine, dispatcher, server rule, parameter server,
worker-time model, sampler, noise generator or objective of the project (a test,
``test_the_reference_engine_imports_nothing_it_checks`` in tests/engines/test_replay.py, holds
it to numpy and the standard library). It is a plain event loop over numpy arrays:

- its own heap of job completions, ties in completion time broken by worker index (section 2);
- its own decision for each method (section 3): the weight of each arriving gradient, the
  steps, the cancellations and the new jobs (FIFO queues for busy workers);
- its own gradients from the data (least squares) or from the formula (noisy quadratic);
- job durations and samples taken from arrays it is given, which the helpers below generate
  from the documented random streams (section 4, "Seeded streams"; the stream of a purpose is
  ``default_rng(SeedSequence(seed, spawn_key=(purpose, *key)))`` with the purposes of the
  record contract: 1 job times, 2 samples, 7 the rule's draws), worker i's j-th job taking the
  j-th entry of worker i's arrays;
- the evaluation cadence of the records: the loss at update 0, at every multiple of
  ``every`` updates and at the end; a loss that is not finite or more than 1e6 times the first
  one stops the run (``diverged``) at that step.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

# stream purposes of the record contract (docs/methods.md section 4; pipeline/core/streams.py)
TIMES, SAMPLES, RULE = 1, 2, 7
BLOWUP = 1e6  # a loss this many times the first evaluated one counts as diverged


def rng_for(seed: int, purpose: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, *key)))


# -- inputs: the documented streams -----------------------------------------------------------


def job_durations(
    taus, noise: str, seed: int, jobs: int, gamma_shape: float = 2.0, jitter: float = 0.5
) -> list[np.ndarray]:
    """``jobs`` durations per worker (section 4): d_{i,j} = tau_i (none), tau_i * Exp(1)
    (exponential), Gamma(k, tau_i / k) (gamma), tau_i + |N(0, 1)| * jitter * tau_i (halfnormal),
    the j-th from the j-th draw of worker i's time stream (numpy's array draws are its
    successive single draws)."""
    out = []
    for w, tau in enumerate(float(t) for t in taus):
        rng = rng_for(seed, TIMES, w)
        if noise == "none":
            d = np.full(jobs, tau)
        elif noise == "exponential":
            d = np.array([tau * e for e in rng.standard_exponential(jobs)])
        elif noise == "gamma":
            d = rng.gamma(gamma_shape, tau / gamma_shape, jobs)
        elif noise == "halfnormal":
            d = np.array([tau + abs(z) * (jitter * tau) for z in rng.standard_normal(jobs)])
        else:
            raise ValueError(noise)
        out.append(d)
    return out


def minibatches(n_rows: int, batch: int, seed: int, n_workers: int, jobs: int) -> list[np.ndarray]:
    """Row indices of each worker's first ``jobs`` minibatches, shape (jobs, batch), every
    worker sampling from all rows (section 6): consecutive chunks of a fresh permutation of the
    rows per epoch, from the worker's sample stream, the remainder of an epoch skipped."""
    per_epoch = n_rows // batch
    out = []
    for w in range(n_workers):
        rng = rng_for(seed, SAMPLES, w)
        epochs = []
        for _ in range(-(-jobs // per_epoch)):
            perm = rng.permutation(n_rows)
            epochs.append(perm[: per_epoch * batch].reshape(per_epoch, batch))
        out.append(np.concatenate(epochs)[:jobs])
    return out


_U64 = np.uint64


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of x + 0x9E3779B97F4A7C15 (Steele, Lea, Flood 2014)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def counter_normals(seed: int, worker: int, jobs: int, dim: int) -> np.ndarray:
    """Standard normals of samples 1..jobs of ``worker``, shape (jobs, dim), as models/noise.py
    documents them: the key of worker w is splitmix(splitmix(seed) xor w * golden); pair p of
    sample s hashes (s * pairs + p) xor key; its high 32 bits give u in (0, 1) (u = (hi + 1/2)
    / 2^32) and its low 32 bits an angle (lo * 2 pi / 2^32); Box-Muller gives the normals
    r cos(angle) and r sin(angle), r = sqrt(-2 log u), coordinates 2p and 2p + 1."""
    with np.errstate(over="ignore"):
        base = _splitmix64(np.array([seed], dtype=_U64))
        key = _splitmix64(base ^ (np.array([worker], dtype=_U64) * _U64(0x9E3779B97F4A7C15)))
        pairs = (dim + 1) // 2
        s = np.arange(1, jobs + 1, dtype=_U64)[:, None]
        p = np.arange(pairs, dtype=_U64)[None, :]
        bits = _splitmix64((s * _U64(pairs) + p) ^ key)
    u = ((bits >> _U64(32)).astype(np.float64) + 0.5) * 2.0**-32
    angle = (bits & _U64(0xFFFFFFFF)).astype(np.float64) * (2.0 * np.pi * 2.0**-32)
    r = np.sqrt(-2.0 * np.log(u))
    z = np.empty((jobs, 2 * pairs))
    z[:, 0::2] = r * np.cos(angle)
    z[:, 1::2] = r * np.sin(angle)
    return z[:, :dim]


def rule_draws(seed: int, n_workers: int, count: int) -> np.ndarray:
    """asgd_random's draws: workers uniform on 0..n-1 from the rule's own stream."""
    return rng_for(seed, RULE).integers(0, n_workers, size=count)


# -- objectives -------------------------------------------------------------------------------


class LeastSquares:
    """F(x) = 0.5 * mean_i (a_i^T x - b_i)^2; a job's gradient on rows idx (None: all rows)."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X, self.y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        self.dim = self.X.shape[1]

    def loss(self, x: np.ndarray) -> float:
        r = self.X @ x - self.y
        return 0.5 * float(r @ r) / len(self.y)

    def grad(self, x: np.ndarray, idx) -> np.ndarray:
        Xb, yb = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        return Xb.T @ (Xb @ x - yb) / len(yb)


class NoisyQuadratic:
    """f(x) = 0.5 * sum_i h_i (x_i - 1)^2, h evenly spaced in [1/cond, 1]; a job's gradient is
    grad f(x) + sigma * z with z its sample's standard normals."""

    def __init__(self, dim: int, sigma: float, cond: float):
        self.dim, self.sigma = dim, sigma
        self.h = np.linspace(1.0 / cond, 1.0, dim)

    def loss(self, x: np.ndarray) -> float:
        e = x - 1.0
        return 0.5 * float(self.h @ (e * e))

    def grad(self, x: np.ndarray, z) -> np.ndarray:
        g = self.h * (x - 1.0)
        return g if z is None else g + self.sigma * z


# -- the event loop ---------------------------------------------------------------------------


@dataclass
class Method:
    """A method of docs/methods.md section 3 and its keys."""

    name: str  # minibatch | asgd | asgd_adaptive | asgd_drop | asgd_random | rennala | ringmaster
    lr: float
    threshold: int | None = None  # asgd_drop (default n), ringmaster's R (default n)
    batch: int | None = None  # rennala's S (default n)
    cancel: bool = False  # rennala, ringmaster


@dataclass
class Run:
    events: list[tuple] = field(default_factory=list)  # (worker, version, delay, applied, lr, time)
    iterates: list[np.ndarray] = field(default_factory=list)  # x_0, x_1, ...
    history: list[tuple] = field(default_factory=list)  # (update, gradients, time, loss)
    gradients: int = 0
    updates: int = 0
    cancelled: int = 0
    time: float = 0.0
    status: str = "finished"


def run_reference(
    method: Method,
    objective,
    durations: list,
    samples: list | None,
    every: int,
    budget_gradients: int | None = None,
    budget_time: float | None = None,
    draws=None,
) -> Run:
    """Run ``method`` with len(durations) workers: worker w's j-th job (j = 0, 1, ...) lasts
    ``durations[w][j]`` and computes its gradient on ``samples[w][j]`` (None: no sample).
    ``draws``: asgd_random's sequence of drawn workers."""
    n = len(durations)
    m = method
    name = m.name
    threshold = n if m.threshold is None else m.threshold
    S = n if m.batch is None else m.batch
    draws = iter(draws) if draws is not None else None

    out = Run()
    x = np.zeros(objective.dim)
    xs = [x]  # x_k for every version k
    k = 0
    acc = np.zeros(objective.dim)
    heap: list[tuple[float, int, int]] = []
    running: list[tuple[int, int] | None] = [None] * n  # (version, job) of each running job
    queues = [deque() for _ in range(n)]  # versions of each worker's queued jobs
    started = [0] * n  # jobs started per worker
    pending = set(range(n))  # minibatch: workers whose gradient the round still waits for
    counted = 0  # rennala: gradients at x_k counted so far
    now = 0.0

    def start(w: int, v: int) -> None:
        j = started[w]
        started[w] += 1
        running[w] = (v, j)
        heapq.heappush(heap, (now + float(durations[w][j]), w, j))

    def evaluate(update: int, gradients: int, t: float) -> bool:
        """Records the loss; True when the run diverged."""
        loss = objective.loss(xs[update])
        out.history.append((update, gradients, t, loss))
        first = out.history[0][3]
        return not math.isfinite(loss) or loss > BLOWUP * max(abs(first), 1e-12)

    diverged = evaluate(0, 0, 0.0)
    for w in range(n):  # every method starts all n workers at x_0
        start(w, 0)
    while True:
        if not heap:
            break
        t, w, j = heapq.heappop(heap)
        if running[w] is None or running[w][1] != j:
            continue  # a cancelled job
        if budget_time is not None and t > budget_time:
            now = budget_time
            break
        now = t
        v = running[w][0]
        running[w] = None
        delay = k - v

        # the method's decision: weight, step, cancelled workers, workers given a new job
        weight, step, cancel, assign = 0.0, False, [], []
        if name == "minibatch":
            if delay == 0 and w in pending:
                pending.discard(w)
                weight = m.lr / n
                if not pending:
                    step, assign, pending = True, list(range(n)), set(range(n))
        elif name in ("asgd", "asgd_adaptive", "asgd_drop", "asgd_random"):
            if name == "asgd_adaptive":
                weight = m.lr if delay <= n else m.lr * (n / delay)
            elif name == "asgd_drop":
                weight = m.lr if delay <= threshold else 0.0
            else:
                weight = m.lr
            step = weight != 0.0
            assign = [int(next(draws))] if name == "asgd_random" else [w]
        elif name == "rennala":
            assign = [w]
            if delay == 0:
                weight = m.lr / S
                counted += 1
                if counted == S:
                    counted, step = 0, True
                    if m.cancel:
                        cancel = assign = list(range(n))
        elif name == "ringmaster":
            assign = [w]
            if delay < threshold:
                weight, step = m.lr, True
                if m.cancel:  # after the update: jobs whose delay reached R restart
                    stale = [
                        u for u in range(n) if running[u] and k + 1 - running[u][0] >= threshold
                    ]
                    cancel, assign = stale, [w, *stale]
        else:
            raise ValueError(name)

        # carried out as section 2 says: accumulate, step, cancel, assign
        if weight:
            z = None if samples is None else samples[w][j]
            acc = acc + weight * objective.grad(xs[v], z)
        if step:
            x = xs[k] - acc
            xs.append(x)
            k += 1
            acc = np.zeros(objective.dim)
        out.events.append((w, v, delay, int(weight != 0.0), weight, t))
        for u in cancel:
            if running[u] is not None:
                running[u] = None
                out.cancelled += 1
        for u in assign:
            queues[u].append(k)
        for u in range(n):  # an idle worker starts the next job of its FIFO queue
            if running[u] is None and queues[u]:
                start(u, queues[u].popleft())

        if step and k % every == 0:
            diverged = evaluate(k, len(out.events), t) or diverged
            if diverged:
                break
        if budget_gradients is not None and len(out.events) == budget_gradients:
            break

    out.gradients, out.updates, out.time = len(out.events), k, now
    if out.history[-1][0] != k:
        diverged = evaluate(k, len(out.events), now) or diverged
    out.status = "diverged" if diverged else "finished"
    out.iterates = xs
    return out
