"""A small residual MLP, a plain ``torch.nn.Module`` for ``objective=torch_module``."""

from __future__ import annotations

import torch


class ResidualMLP(torch.nn.Module):
    """Linear embedding, ``blocks`` residual blocks (x + W2 tanh(W1 x)), linear head.

    ``in_features`` and ``n_classes`` come from the data when not given (the pipeline fills the
    arguments of those names from the columns of X and the classes of y); ``hidden`` and
    ``blocks`` are set as ``+objective.module.hidden=32``.
    """

    def __init__(self, in_features: int, n_classes: int, hidden: int = 16, blocks: int = 2):
        super().__init__()
        if hidden < 1 or blocks < 0:
            raise ValueError(f"hidden must be >= 1 and blocks >= 0, got {hidden}, {blocks}")
        self.embed = torch.nn.Linear(in_features, hidden)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden)
            )
            for _ in range(blocks)
        )
        self.head = torch.nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)
