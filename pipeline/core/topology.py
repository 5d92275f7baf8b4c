"""Worker-time models (docs/methods.md, section 4): mean time per job for each worker, and
per-job random durations drawn from per-worker seeded streams.

Worker i's j-th job always gets the j-th draw of worker i's stream, whichever engine asks, so the
event engine and the process engine see the same durations for the same jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.streams import TIMES, stream

MODELS = ("homogeneous", "linear", "sqrt", "straggler", "two_class", "custom", "native", "trace")
NOISES = ("none", "exponential", "gamma", "halfnormal")


def mean_times(
    model: str,
    n_workers: int,
    tau: float = 1.0,
    *,
    stragglers: int = 1,
    factor: float = 100.0,
    fraction_fast: float = 0.5,
    tau_fast: float = 1.0,
    tau_slow: float = 10.0,
    times: Sequence[float] | None = None,
) -> np.ndarray:
    """tau_i for i = 1..n, as an array of n floats (index 0 is worker 1 of docs/methods.md)."""
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    i = np.arange(1, n_workers + 1, dtype=np.float64)
    if model in ("homogeneous", "native", "trace"):
        out = np.full(n_workers, tau)
    elif model == "linear":
        out = tau * i
    elif model == "sqrt":
        out = tau * np.sqrt(i)
    elif model == "straggler":
        if not 0 <= stragglers <= n_workers:
            raise ValueError(f"stragglers must be in [0, n_workers={n_workers}], got {stragglers}")
        out = np.full(n_workers, tau)
        if stragglers:
            out[n_workers - stragglers :] = factor * tau
    elif model == "two_class":
        if not 0.0 <= fraction_fast <= 1.0:
            raise ValueError(f"fraction_fast must be in [0, 1], got {fraction_fast}")
        n_fast = int(round(fraction_fast * n_workers))
        out = np.full(n_workers, float(tau_slow))
        out[:n_fast] = tau_fast
    elif model == "custom":
        if times is None:
            raise ValueError("topology=custom needs topology.times, a list of n_workers times")
        out = np.asarray(list(times), dtype=np.float64)
        if out.shape != (n_workers,):
            raise ValueError(
                f"topology.times has {out.size} entries but topology.n_workers is {n_workers}"
            )
    else:
        raise ValueError(f"unknown topology {model!r}; choose one of {', '.join(MODELS)}")
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ValueError(f"worker times must be positive and finite, got {out.tolist()[:8]}")
    return out


class JobTimes:
    """Per-job durations: d_{i,j} = tau_i * noise, with noise redrawn per job.

    - ``none``: d = tau_i
    - ``exponential``: d = tau_i * Exp(1)
    - ``gamma``: shape k, mean tau_i
    - ``halfnormal``: d = tau_i + |N(0, (jitter * tau_i)^2)|
    """

    _BLOCK = 32  # draws per refill; thousands of workers each hold one block

    def __init__(
        self,
        taus: np.ndarray,
        noise: str = "none",
        seed: int = 0,
        *,
        gamma_shape: float = 2.0,
        jitter: float = 0.5,
    ):
        if noise not in NOISES:
            raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")
        if noise == "gamma" and not gamma_shape > 0:
            raise ValueError(f"gamma_shape must be positive, got {gamma_shape}")
        if noise == "halfnormal" and not jitter >= 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        self.taus = np.asarray(taus, dtype=np.float64)
        self.noise = noise
        self.seed = seed
        self.gamma_shape = gamma_shape
        self.jitter = jitter
        self._tau_list = self.taus.tolist()
        n = len(self.taus)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._blocks: list[list[float]] = [[] for _ in range(n)]

    @property
    def n_workers(self) -> int:
        return len(self._tau_list)

    def _rng(self, worker: int) -> np.random.Generator:
        rng = self._rngs[worker]
        if rng is None:
            rng = self._rngs[worker] = stream(self.seed, TIMES, worker)
        return rng

    def draw_block(self, rng: np.random.Generator, worker: int, size: int) -> np.ndarray:
        """The next ``size`` durations of ``worker`` from its stream ``rng`` (any split of a
        stream into blocks gives the same durations: each is drawn on its own, in order)."""
        tau = self._tau_list[worker]
        if self.noise == "exponential":
            return tau * rng.standard_exponential(size)
        if self.noise == "gamma":
            return rng.gamma(self.gamma_shape, tau / self.gamma_shape, size)
        return tau + np.abs(rng.standard_normal(size)) * (self.jitter * tau)  # halfnormal

    def _refill(self, worker: int) -> list[float]:
        out = self.draw_block(self._rng(worker), worker, self._BLOCK)[::-1].tolist()
        self._blocks[worker] = out
        return out

    def drawer(self):
        """A function ``worker -> duration of its next job`` (the same draws as :meth:`next`,
        with the common case inlined: an engine calls it once per job)."""
        if self.noise == "none":
            return self._tau_list.__getitem__
        blocks, refill = self._blocks, self._refill

        def draw(worker: int) -> float:
            block = blocks[worker]
            return block.pop() if block else refill(worker).pop()

        return draw

    def next(self, worker: int) -> float:
        """Duration of worker ``worker``'s next job."""
        if self.noise == "none":
            return self._tau_list[worker]
        block = self._blocks[worker]
        if not block:
            block = self._refill(worker)
        return block.pop()


class BulkDraws:
    """Durations for many workers at once, the same as :meth:`JobTimes.next` gives one by one
    (each worker's own stream, in order): a block of ``block`` durations per worker, refilled
    from the worker's stream when a call needs more than the block holds."""

    def __init__(self, times: JobTimes, block: int = 32):
        n = times.n_workers
        self.times = times
        self.block = block
        self.constant = times.noise == "none"
        self.taus = times.taus
        self._rngs: list[np.random.Generator | None] = [None] * n
        if not self.constant:
            self.buf = np.empty((n, block))
            self.pos = np.full(n, block, dtype=np.int64)  # next unused slot of each block

    def columns(self, workers: np.ndarray, counts: np.ndarray):
        """The next ``counts[i]`` durations of each of ``workers[i]`` (distinct workers, counts
        in decreasing order, 1 <= counts <= block), as columns: yields, for j = 0, 1, ..., the
        j-th duration of each worker that draws more than j (a prefix of ``workers``)."""
        width = int(counts[0]) if len(counts) else 0
        # how many workers draw more than j: a prefix, counts being decreasing
        sizes = np.searchsorted(-counts, -np.arange(width), side="left").tolist()
        if self.constant:
            taus = self.taus[workers]
            for a in sizes:
                yield taus[:a]
            return
        buf, pos, block = self.buf, self.pos, self.block
        refill = workers[pos[workers] + counts > block]
        if len(refill):
            times, rngs = self.times, self._rngs
            for w in refill.tolist():
                p = int(pos[w])
                rest = block - p
                buf[w, :rest] = buf[w, p:]
                rng = rngs[w]
                if rng is None:
                    rng = rngs[w] = stream(times.seed, TIMES, w)
                buf[w, rest:] = times.draw_block(rng, w, block - rest)
                pos[w] = 0
        at = pos[workers]
        for j, a in enumerate(sizes):
            yield buf[workers[:a], at[:a] + j]
        pos[workers] += counts


def harmonic_prefix(taus: Sequence[float]) -> np.ndarray:
    """H_m = m / sum_{i<=m} 1/tau_(i) over the m fastest workers, m = 1..n."""
    t = np.sort(np.asarray(taus, dtype=np.float64))
    m = np.arange(1, len(t) + 1)
    return m / np.cumsum(1.0 / t)
