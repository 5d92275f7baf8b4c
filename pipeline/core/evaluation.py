"""Evaluation of the full objective at the server's iterate (never charged to simulated time)."""

from __future__ import annotations

import math

import torch

from models.objectives import Objective


class Evaluator:
    """Metrics of an iterate: training loss, F - F* where F* is known, the squared norm of the
    full gradient, and test loss and accuracy for classifiers."""

    #: a loss this many times the first evaluated one counts as diverged
    BLOWUP = 1e6

    def __init__(self, objective: Objective, f_star: float | None):
        self.objective = objective
        self.f_star = f_star
        self.first_loss: float | None = None
        self.extra_columns: tuple[str, ...] = tuple(objective.metric_names)

    def __call__(self, x: torch.Tensor) -> dict[str, float | None]:
        m = self.objective.metrics(x)
        loss = m.pop("loss")
        if self.first_loss is None:
            self.first_loss = loss
        sub = loss - self.f_star if self.f_star is not None else None
        return {"loss": loss, "suboptimality": sub, **m}

    def diverged(self, metrics: dict) -> bool:
        """Not finite, or more than BLOWUP times the first evaluated loss."""
        loss = metrics["loss"]
        if loss is None or not math.isfinite(loss):
            return True
        first = self.first_loss if self.first_loss is not None else loss
        return loss > self.BLOWUP * max(abs(first), 1e-12)
