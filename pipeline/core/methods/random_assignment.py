"""Asynchronous SGD with random assignment (docs/methods.md, section 3.4)."""

from __future__ import annotations

import numpy as np

from pipeline.core.methods.asgd import AsyncSGD
from pipeline.core.methods.base import Decision


class RandomAssignmentASGD(AsyncSGD):
    """After each arrival the server draws a worker uniformly at random, independent of who
    finished, and queues a job at the current iterate for it. Workers run their queues in FIFO
    order, so n jobs stay in flight and each worker contributes equally in expectation."""

    name = "asgd_random"
    goes_on = False  # the server draws who goes on
    _BLOCK = 4096

    def __init__(
        self,
        n_workers: int,
        lr: float,
        rng: np.random.Generator,
        stepsize: str = "constant",
        threshold: int | None = None,
    ):
        super().__init__(n_workers, lr, stepsize, threshold)
        self._rng = rng
        self._draws: list[int] = []
        self._lost: set[int] = set()
        self._outstanding = [1] * n_workers  # jobs given to each worker and not yet back

    def _draw(self) -> int:
        if not self._draws:
            block = self._rng.integers(0, self.n, size=self._BLOCK)
            self._draws = block[::-1].tolist()  # pop() from the end yields draws in order
        return self._draws.pop()

    def _next_jobs(self, worker: int) -> tuple[int, ...]:
        self._outstanding[worker] -= 1
        w = self._draw()
        while w in self._lost:  # uniform over the workers still there
            w = self._draw()
        self._outstanding[w] += 1
        return self._solo[w]

    def on_worker_lost(self, worker: int) -> Decision | None:
        """The lost worker's jobs (running and queued) go to workers drawn among the others, so
        n jobs stay in flight."""
        self._lost.add(worker)
        if len(self._lost) == self.n:
            raise RuntimeError("asynchronous SGD with random assignment: every worker is gone")
        again = []
        for _ in range(self._outstanding[worker]):
            w = self._draw()
            while w in self._lost:
                w = self._draw()
            self._outstanding[w] += 1
            again.append(w)
        self._outstanding[worker] = 0
        return Decision(0, 0.0, False, tuple(again))
