"""Asynchronous SGD with random assignment (METHODS.md, method 3)."""

from __future__ import annotations

import numpy as np

from pipeline.methods.asgd import AsyncSGD


class RandomAssignmentASGD(AsyncSGD):
    """After each arrival the server draws a worker uniformly at random, independent of who
    finished, and queues a job at the current iterate for it. Workers run their queues in FIFO
    order, so n jobs stay in flight and each worker contributes equally in expectation."""

    name = "asgd_random"
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

    def _next_jobs(self, worker: int) -> tuple[int, ...]:
        if not self._draws:
            block = self._rng.integers(0, self.n, size=self._BLOCK)
            self._draws = block[::-1].tolist()  # pop() from the end yields draws in order
        return self._solo[self._draws.pop()]
