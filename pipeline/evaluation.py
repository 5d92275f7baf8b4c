"""Evaluation of the full objective at the server's iterate (never charged to simulated time)."""

from __future__ import annotations

import math

import torch

from models.objectives import Objective


class Evaluator:
    """Metrics of an iterate: training loss and, where F* is known, F - F*."""

    def __init__(self, objective: Objective, f_star: float | None):
        self.objective = objective
        self.f_star = f_star
        self.extra_columns: tuple[str, ...] = ()

    def __call__(self, x: torch.Tensor) -> dict[str, float | None]:
        loss = self.objective.loss(x)
        sub = loss - self.f_star if self.f_star is not None else None
        return {"loss": loss, "suboptimality": sub}

    @staticmethod
    def diverged(metrics: dict) -> bool:
        loss = metrics["loss"]
        return loss is None or not math.isfinite(loss)
