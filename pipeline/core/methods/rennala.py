"""Rennala SGD (Tyurin & Richtarik, NeurIPS 2023; docs/methods.md, section 3.5)."""

from __future__ import annotations

from pipeline.core.methods.base import Decision, ServerRule


class RennalaSGD(ServerRule):
    """Every worker computes gradients at x_k back to back; the server averages the first S that
    arrive for x_k and steps. A gradient from an older point is discarded on arrival, and only
    then does its worker get the current point (the published method: finish and discard).

    With ``cancel`` every running job is cancelled on each step and all workers restart at
    x_{k+1} (cancel and restart: never slower in time, but not the published method)."""

    name = "rennala"
    synchronous = True

    def __init__(self, n_workers: int, lr: float, batch: int | None = None, cancel: bool = False):
        super().__init__(n_workers, lr)
        self.cancel = bool(cancel)
        self.batch = n_workers if batch is None else int(batch)
        if self.batch < 1:
            raise ValueError(f"Rennala batch S must be >= 1, got {self.batch}")
        self._coef = self.lr / self.batch
        self._count = 0
        self._live = list(range(n_workers))

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        if delay:
            return Decision(delay, 0.0, False, self._solo[worker])
        self._count += 1
        if self._count < self.batch:
            return Decision(0, self._coef, False, self._solo[worker])
        self._count = 0
        self.version += 1
        if not self.cancel:
            return Decision(0, self._coef, True, self._solo[worker])
        everyone = tuple(self._live)
        return Decision(0, self._coef, True, everyone, everyone)

    def on_worker_lost(self, worker: int) -> Decision | None:
        if worker in self._live:
            self._live.remove(worker)
        if not self._live:
            raise RuntimeError("Rennala SGD: every worker is gone")
        return None

    @property
    def updates_per_gradient(self) -> float:
        return 1.0 / self.batch

    def describe(self) -> dict[str, object]:
        return {"lr": self.lr, "batch": self.batch, "cancel": self.cancel}
