"""Malenia SGD (Tyurin & Richtarik, NeurIPS 2023; docs/methods.md, section 3.7)."""

from __future__ import annotations

from pipeline.api import Decision, ServerRule


class MaleniaSGD(ServerRule):
    """Every worker computes gradients at x_k back to back; the server keeps, per worker i, the
    sum and the count B_i of the gradients computed at x_k (older ones are discarded on
    arrival) and steps once the harmonic mean of the counts reaches S/n, i.e.
    sum_i 1/B_i <= n^2/S (so every worker has given at least one):
    x_{k+1} = x_k - lr * (1/n) sum_i (1/B_i) sum_j g_ij, the mean of the per-worker means,
    unbiased when each worker samples its own data. Per-worker averaging is the step's
    ``scale``: each kept gradient is added with weight lr, the step scales worker i's by
    1/(n B_i). With ``cancel`` every running job is cancelled on each step and all restart."""

    name = "malenia"
    synchronous = True
    scales_steps = True

    def __init__(self, n_workers: int, lr: float, batch: int | None = None, cancel: bool = False,
                 worker_times: list[float] | None = None):  # fmt: skip
        super().__init__(n_workers, lr)
        # gradients per step, for the evaluation cadence: at least S, and while the slowest
        # worker computes one, worker i computes about tau_max / tau_i
        slow = max(worker_times) if worker_times else 1.0
        self._per_step = max(n_workers, sum(slow / t for t in worker_times or [1.0] * n_workers))
        self.batch = n_workers if batch is None else int(batch)  # S
        if self.batch < 1:
            raise ValueError(f"Malenia batch S must be >= 1, got {self.batch}")
        self.cancel = bool(cancel)
        self._bound = n_workers * n_workers / self.batch  # step once sum_i 1/B_i <= n^2/S
        self._new_round()

    def _new_round(self) -> None:
        self._counts = [0] * self.n
        self._empty = self.n  # workers without a gradient at x_k
        self._inv = 0.0  # sum of 1/B_i over the others

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        if delay:
            return Decision(delay, 0.0, False, self.solo[worker])
        b = self._counts[worker] = self._counts[worker] + 1
        if b == 1:
            self._empty -= 1
            self._inv += 1.0
        else:
            self._inv += 1.0 / b - 1.0 / (b - 1)
        if self._empty or self._inv > self._bound:
            return Decision(0, self.lr, False, self.solo[worker])
        scale = tuple(1.0 / (self.n * c) for c in self._counts)
        self._new_round()
        self.version += 1
        if not self.cancel:
            return Decision(0, self.lr, True, self.solo[worker], (), scale)
        return Decision(0, self.lr, True, self._everyone, self._everyone, scale)

    def on_worker_lost(self, worker: int) -> Decision | None:
        raise RuntimeError(
            f"Malenia SGD averages every worker's gradients at each step: worker {worker} is gone"
        )

    @property
    def updates_per_gradient(self) -> float:
        return 1.0 / max(self.batch, self._per_step)

    def describe(self) -> dict[str, object]:
        return {"lr": self.lr, "batch": self.batch, "cancel": self.cancel}
