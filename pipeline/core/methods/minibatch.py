"""Minibatch SGD: the synchronous baseline (docs/methods.md, section 3.1)."""

from __future__ import annotations

from pipeline.core.methods.base import Decision, ServerRule


class MinibatchSGD(ServerRule):
    """Round k: every live worker computes a gradient at x_k; after all of them arrived,
    x_{k+1} = x_k - lr * mean(g). Each gradient enters with weight lr / n."""

    name = "minibatch"
    synchronous = True

    def __init__(self, n_workers: int, lr: float):
        super().__init__(n_workers, lr)
        self._live = list(range(n_workers))
        self._pending: set[int] = set(self._live)
        self._coef = self.lr / n_workers

    def _new_round(self) -> tuple[int, ...]:
        self.version += 1
        self._pending = set(self._live)
        return tuple(self._live)

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        if delay != 0 or worker not in self._pending:
            return Decision(delay, 0.0, False)
        self._pending.discard(worker)
        if self._pending:
            return Decision(0, self._coef, False)
        return Decision(0, self._coef, True, self._new_round())

    def on_worker_lost(self, worker: int) -> Decision | None:
        if worker not in self._live:
            return None
        self._live.remove(worker)
        if not self._live:
            raise RuntimeError("minibatch SGD: every worker is gone")
        self._pending.discard(worker)
        self._coef = self.lr / len(self._live)
        if self._pending:
            return None
        # the lost worker was the last one the round waited for: close the round now
        return Decision(0, 0.0, True, self._new_round())

    @property
    def updates_per_gradient(self) -> float:
        return 1.0 / self.n
