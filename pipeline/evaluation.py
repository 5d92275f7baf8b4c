"""Evaluation of the full objective at the server's iterate (never charged to simulated time)."""

from __future__ import annotations

import math

import torch

from models.objectives import Objective


class Evaluator:
    """Metrics of an iterate: training loss, F - F* where F* is known, the squared norm of the
    full gradient, and test loss and accuracy for classifiers."""

    def __init__(self, objective: Objective, f_star: float | None):
        self.objective = objective
        self.f_star = f_star
        self.extra_columns: tuple[str, ...] = tuple(objective.metric_names)

    def __call__(self, x: torch.Tensor) -> dict[str, float | None]:
        m = self.objective.metrics(x)
        loss = m.pop("loss")
        sub = loss - self.f_star if self.f_star is not None else None
        return {"loss": loss, "suboptimality": sub, **m}

    @staticmethod
    def diverged(metrics: dict) -> bool:
        loss = metrics["loss"]
        return loss is None or not math.isfinite(loss)
