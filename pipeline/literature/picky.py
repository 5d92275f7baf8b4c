"""Picky SGD (Cohen, Daniely, Drori, Koren & Schain, NeurIPS 2021; docs/methods.md, 3.9)."""

from __future__ import annotations

from pipeline.api import Decision, ServerRule


class PickySGD(ServerRule):
    """Asynchronous SGD that applies a delayed gradient only if the iterate moved little since
    the gradient's point: with g computed at x_{k-d}, step x_{k+1} = x_k - lr * g when
    ||x_k - x_{k-d}|| <= radius (always when d = 0), else discard g and take no step. The
    worker goes on at the current point either way. The paper's radius is eps / (2 beta)
    (eps: the target gradient norm, beta: the smoothness constant); here it is a key."""

    name = "picky"
    reads_iterates = True

    def __init__(self, n_workers: int, lr: float, radius: float = 1.0):
        super().__init__(n_workers, lr)
        if not radius > 0:
            raise ValueError(f"Picky SGD radius must be > 0, got {radius}")
        self.radius = float(radius)
        self.discarded = 0

    def on_gradient(self, worker: int, version: int) -> Decision:
        delay = self.version - version
        if delay and self.iterates.distance(version) > self.radius:
            self.discarded += 1
            return Decision(delay, 0.0, False, self.solo[worker])
        self.version += 1
        return Decision(delay, self.lr, True, self.solo[worker])

    def describe(self) -> dict[str, object]:
        return {"lr": self.lr, "radius": self.radius}
