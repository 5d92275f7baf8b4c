"""A user's own code, importable by path (``tests.models.user_pkg.TwoLayer``): a tiny torch
module, data factories and a loss, for objective=torch_module and dataset=callable."""

from __future__ import annotations

import numpy as np
import torch


class TwoLayer(torch.nn.Module):
    """Linear - tanh - linear; ``in_features`` and ``n_classes`` come from the data when not
    given."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 6):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_data(rows: int = 48, features: int = 5, classes: int = 3, seed: int = 0) -> dict:
    """Labelled Gaussian blobs with a test split."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.standard_normal((classes, features))
    y = np.arange(rows + 12) % classes
    X = centres[y] + rng.standard_normal((rows + 12, features))
    return {"X": X[:rows], "y": y[:rows], "X_test": X[rows:], "y_test": y[rows:]}


def make_regression(rows: int = 40, features: int = 4, outputs: int = 2, seed: int = 1):
    """Real-valued targets, rows x outputs, as a tuple (X, y, X_test, y_test)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows + 10, features))
    y = X @ rng.standard_normal((features, outputs)) + 0.1 * rng.standard_normal(
        (rows + 10, outputs)
    )
    return X[:rows], y[:rows], X[rows:], y[rows:]


def huber(output: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """A user's own loss."""
    return torch.nn.functional.huber_loss(output, target, delta=delta)


def broken(**_):
    raise RuntimeError("the factory broke")
