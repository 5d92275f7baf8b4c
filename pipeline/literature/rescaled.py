"""Rescaled ASGD (Mahran, Maranjyan & Richtarik, 2026; docs/methods.md, section 3.8)."""

from __future__ import annotations

from pipeline.api import DelayRule


class RescaledASGD(DelayRule):
    """Asynchronous SGD whose stepsize for worker i is proportional to its mean job time tau_i:
    x_{k+1} = x_k - lr * (tau_i / tau_max) * g_i, applied on arrival, whatever the delay.
    Worker i arrives about 1/tau_i times per unit of time, so every worker moves the iterate by
    the same total stepsize per unit of time: the fixed point is the stationary point of
    (1/n) sum_i f_i, not of the arrival-frequency-weighted objective plain ASGD drifts to.
    ``worker_times`` (tau_i) is filled in by the pipeline from the topology."""

    name = "rescaled_asgd"

    def __init__(self, n_workers: int, lr: float, worker_times: list[float] | None = None):
        super().__init__(n_workers, lr)
        if worker_times is None:
            raise ValueError(
                "Rescaled ASGD needs each worker's mean job time tau_i; this topology gives "
                "none (choose an emulated topology: homogeneous, linear, sqrt, ...)"
            )
        taus = [float(t) for t in worker_times]
        if len(taus) != n_workers or not all(t > 0 for t in taus):
            raise ValueError(f"worker_times must be {n_workers} positive times, got {taus}")
        top = max(taus)
        self.weights = [self.lr * t / top for t in taus]

    def weight_for(self, worker: int, delay: int) -> float:
        return self.weights[worker]

    def describe(self) -> dict[str, object]:
        return {"lr": self.lr, "weight_min": min(self.weights), "weight_max": max(self.weights)}
