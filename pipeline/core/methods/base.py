"""The protocol every server rule speaks, independent of clocks, processes and sockets.

An engine tells a rule "a gradient arrived from worker w, computed at version v"; the rule answers
with a :class:`Decision`. The engine then carries it out:

1. the gradient is added to the server's accumulator with coefficient ``weight`` (0 = discarded);
2. if ``step``, the server applies the accumulator: x_{k+1} = x_k - sum(weight_i * g_i), k += 1;
3. the running jobs of the workers in ``cancel`` are cancelled (their results never reach the rule);
4. each worker in ``assign`` gets a new job at the server's current version (after the step). A job
   given to a worker that is still busy waits in that worker's FIFO queue.

A rule keeps its own count of versions (it decides every step), so it can compute delays itself.

Two capabilities a rule may declare (class attributes; both off by default, and a rule that
declares neither costs the engines nothing more):

- ``scales_steps``: a step's ``Decision.scale`` (one factor per worker) multiplies every gradient
  accumulated since the previous step by its worker's factor, so a rule can average per worker
  once it knows the counts (Malenia SGD). The event rows record the weights as applied.
- ``reads_iterates``: ``on_gradient`` may call ``self.iterates`` (an :class:`IterateView`,
  bound by the engine before the first event): the current iterate and the one a gradient was
  computed at (Picky SGD). The event engine then replays in lockstep with the schedule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple, Protocol

import numpy as np


class Decision(NamedTuple):
    delay: int
    weight: float
    step: bool
    assign: tuple[int, ...] = ()
    cancel: tuple[int, ...] = ()
    #: with ``step`` (``scales_steps`` rules only): one factor per worker for the gradients
    #: accumulated since the previous step; () = all 1
    scale: tuple[float, ...] = ()


class IterateView(Protocol):
    """What an engine shows a ``reads_iterates`` rule during ``on_gradient``."""

    def current(self) -> Any:
        """The server's iterate now (a 1-d tensor; do not modify it)."""

    def at(self, version: int) -> Any:
        """The iterate of ``version``, for any version a job in flight (or arriving) holds."""

    def distance(self, version: int) -> float:
        """``||x_now - x_version||``, the Euclidean distance."""


class ServerRule(ABC):
    """One method of docs/methods.md, written once and run unchanged by every engine."""

    #: registry name (the ``optimizer=`` choice)
    name: str = ""
    #: waits for a set of workers at each step (a lost worker matters: engine.on_worker_failure)
    synchronous: bool = False
    #: steps carry per-worker factors (``Decision.scale``)
    scales_steps: bool = False
    #: ``on_gradient`` reads ``self.iterates``
    reads_iterates: bool = False
    #: bound by the engine for ``reads_iterates`` rules
    iterates: IterateView | None = None

    def __init__(self, n_workers: int, lr: float):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if not lr > 0:
            raise ValueError(f"stepsize must be positive, got {lr}")
        self.n = n_workers
        self.lr = float(lr)
        self.version = 0
        #: ``solo[w]`` is ``(w,)``, the assignment "w goes on" (the engines' fast path)
        self.solo = self._solo = tuple((w,) for w in range(n_workers))
        self._everyone = tuple(range(n_workers))

    def start(self) -> tuple[int, ...]:
        """Workers that get a job at x_0 when the run starts (default: all of them)."""
        return self._everyone

    @abstractmethod
    def on_gradient(self, worker: int, version: int) -> Decision:
        """A gradient computed at ``version`` arrived from ``worker``; decide what to do."""

    def on_worker_lost(self, worker: int) -> Decision | None:
        """A worker died. Return a decision to carry out (e.g. a step with what is buffered), or
        None. Raise RuntimeError if the method cannot go on without it."""
        return None

    @property
    def updates_per_gradient(self) -> float:
        """Expected server updates per computed gradient (used to space evaluations)."""
        return 1.0

    def describe(self) -> dict[str, object]:
        """Resolved hyper-parameters, for records and tracking."""
        return {"lr": self.lr}


class DelayRule(ServerRule):
    """A rule whose every decision is a stepsize of the arrival's worker and delay alone: the
    gradient is applied with ``weight_for(worker, delay)`` (0 = discarded), a nonzero weight is
    a step of its own, and the worker goes on at once at the new version (nothing cancelled,
    nothing queued). Asynchronous SGD and its stepsize rules are of this kind.

    Such a rule's schedule is a merge of the workers' own streams of job times, so the event
    engine computes it in bulk, a chunk of arrivals at a time, with the same rows as one event
    at a time (:mod:`pipeline.engines.bulk`). It asks :meth:`weights_for` for a chunk's
    weights; ``weight_for`` must then be a function of its arguments and the rule's constants
    (no state, no randomness). A rule whose weight does not depend on the worker says so with
    ``per_worker = False`` (the weights are computed once per distinct delay)."""

    #: the worker goes on at once after every arrival (a subclass that assigns otherwise
    #: sets it False and overrides ``_next_jobs``)
    goes_on: bool = True
    #: whether ``weight_for`` depends on the worker
    per_worker: bool = True

    @abstractmethod
    def weight_for(self, worker: int, delay: int) -> float:
        """The coefficient of a gradient from ``worker`` with this delay (0: discarded)."""

    def weights_for(self, workers: np.ndarray, delays: np.ndarray) -> np.ndarray:
        """``weight_for`` of each (worker, delay) pair, as float64, each distinct pair (or
        delay, without ``per_worker``) computed once."""
        f = self.weight_for
        if self.per_worker:
            keys = delays.astype(np.int64) * self.n + workers
            u, inv = np.unique(keys, return_inverse=True)
            n = self.n
            vals = [f(int(k % n), int(k // n)) for k in u.tolist()]
        else:
            u, inv = np.unique(delays, return_inverse=True)
            vals = [f(0, d) for d in u.tolist()]
        return np.array(vals, dtype=np.float64)[inv]

    def _next_jobs(self, worker: int) -> tuple[int, ...]:
        return self._solo[worker]

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        weight = self.weight_for(worker, delay)
        if weight:
            self.version += 1
            return Decision(delay, weight, True, self._next_jobs(worker))
        return Decision(delay, 0.0, False, self._next_jobs(worker))
