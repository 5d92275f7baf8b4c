"""Objectives: the full training loss and stochastic gradients of a model, as torch code.

An objective knows nothing about workers: an engine asks it for a *sampler* over some rows (a
worker's shard) driven by a seeded generator, and for the gradient at a point on what the sampler
drew. The iterate is a flat 1-d tensor on ``objective.device``.
"""

from models.objectives.base import CounterNoise, DataObjective, Objective, RowSampler, Sample
from models.objectives.modules import CNN, LOSSES, MLP, LogReg, ModuleObjective, TorchModule
from models.objectives.quadratic import NoisyQuadratic, Quadratic

__all__ = [
    "CNN", "LOSSES", "MLP", "OBJECTIVES", "CounterNoise", "DataObjective", "LogReg",
    "ModuleObjective", "NoisyQuadratic", "Objective", "Quadratic", "RowSampler", "Sample",
    "TorchModule",
]  # fmt: skip

OBJECTIVES = ("quadratic", "noisy_quadratic", "logreg", "mlp", "cnn", "torch_module")
