"""Ringmaster ASGD (Maranjyan, Tyurin, Richtarik, ICML 2025; docs/methods.md, section 3.6)."""

from __future__ import annotations

from collections import deque

from pipeline.core.methods.base import Decision, ServerRule


class RingmasterASGD(ServerRule):
    """Asynchronous SGD with a delay threshold R: a gradient with delay < R is applied with the
    constant stepsize, one with delay >= R is ignored and its worker restarts at x_k. With
    ``cancel`` a running job is cancelled and restarted as soon as its delay reaches R."""

    name = "ringmaster"

    def __init__(
        self,
        n_workers: int,
        lr: float,
        threshold: int | None = None,
        cancel: bool = False,
    ):
        super().__init__(n_workers, lr)
        self.threshold = n_workers if threshold is None else int(threshold)
        if self.threshold < 1:
            raise ValueError(f"Ringmaster threshold R must be >= 1, got {self.threshold}")
        self.cancel = bool(cancel)
        # version each worker's running job was started at; jobs in start order (versions rise)
        self._running = [0] * n_workers
        self._started: deque[tuple[int, int]] = deque((0, w) for w in range(n_workers))

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        if delay >= self.threshold:
            self._restart(worker)
            return Decision(delay, 0.0, False, self._solo[worker])
        self.version += 1
        self._restart(worker)
        if not self.cancel:
            return Decision(delay, self.lr, True, self._solo[worker])
        stale = self._stale_jobs()
        for u in stale:
            self._restart(u)
        return Decision(delay, self.lr, True, (worker, *stale), stale)

    def _restart(self, worker: int) -> None:
        self._running[worker] = self.version
        if self.cancel:
            self._started.append((self.version, worker))

    def _stale_jobs(self) -> tuple[int, ...]:
        """Workers whose running job has reached delay R at the current version."""
        oldest_fresh = self.version - self.threshold
        stale = []
        started = self._started
        while started and started[0][0] <= oldest_fresh:
            v, u = started.popleft()
            if self._running[u] == v:
                stale.append(u)
                self._running[u] = -1  # mark: a second stale entry for u must not fire again
        return tuple(stale)

    def describe(self) -> dict[str, object]:
        return {"lr": self.lr, "threshold": self.threshold, "cancel": self.cancel}
