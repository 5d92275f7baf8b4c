"""Asynchronous SGD, the paper's Algorithm 1 (docs/methods.md, section 3.2), with its stepsize
rules."""

from __future__ import annotations

from pipeline.core.methods.base import DelayRule

STEPSIZES = ("constant", "adaptive", "drop")


class AsyncSGD(DelayRule):
    """Every arriving gradient is applied at once (unless its stepsize is 0) and its worker gets
    the new iterate. Stepsize for delay tau:

    - ``constant``: lr;
    - ``adaptive``: lr * min(1, n / tau);
    - ``drop``: lr if tau <= threshold (default n), else the gradient is discarded.
    """

    name = "asgd"
    per_worker = False

    def __init__(
        self,
        n_workers: int,
        lr: float,
        stepsize: str = "constant",
        threshold: int | None = None,
    ):
        super().__init__(n_workers, lr)
        if stepsize not in STEPSIZES:
            raise ValueError(f"unknown stepsize rule {stepsize!r}; choose one of {STEPSIZES}")
        if threshold is not None and threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.stepsize = stepsize
        self.threshold = n_workers if threshold is None else int(threshold)

    def weight_for(self, worker: int, delay: int) -> float:
        if self.stepsize == "constant":
            return self.lr
        if self.stepsize == "adaptive":
            return self.lr if delay <= self.n else self.lr * self.n / delay
        return self.lr if delay <= self.threshold else 0.0

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"lr": self.lr, "stepsize": self.stepsize}
        if self.stepsize == "drop":
            out["threshold"] = self.threshold
        return out
