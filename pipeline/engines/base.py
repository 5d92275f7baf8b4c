"""What every engine shares: the run's outcome and the evaluation schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.evaluation import Evaluator
from pipeline.records import RunRecorder


@dataclass
class RunResult:
    x: torch.Tensor
    status: str  # finished | diverged | failed | killed
    gradients: int  # arrivals (computed gradients, applied or not)
    updates: int  # server versions
    time: float  # simulated seconds (sim) or wall seconds since start (rpc)
    cancelled: int = 0
    final: dict = field(default_factory=dict)  # metrics at the final iterate
    iterates: list[torch.Tensor] | None = None  # x_0, x_1, ... when traced
    failures: list[str] = field(default_factory=list)


class EvalSchedule:
    """Evaluates at update 0, every ``every`` updates, and at the end; stops on divergence."""

    def __init__(self, evaluator: Evaluator, recorder: RunRecorder, every: int):
        self.evaluator = evaluator
        self.recorder = recorder
        self.every = max(1, int(every))
        self.last_update = -1
        self.diverged = False

    def record(self, x: torch.Tensor, update: int, gradients: int, time: float) -> dict:
        metrics = self.evaluator(x)
        self.last_update = update
        self.recorder.history({"update": update, "gradients": gradients, "time": time, **metrics})
        if self.evaluator.diverged(metrics):
            self.diverged = True
        return metrics
