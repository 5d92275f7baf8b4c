"""Objectives: the full training loss and stochastic gradients of a model, as torch code.

An objective knows nothing about workers: an engine asks it for a *sampler* over some rows (a
worker's shard) driven by a seeded generator, and for the gradient at a point on what the sampler
drew. The iterate is a flat 1-d tensor on ``objective.device``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Sample = Any  # what a sampler returns and grad() consumes: row indices, noise, or None (full)


class Objective(ABC):
    name = ""
    dim: int
    dtype: torch.dtype
    device: torch.device
    n_rows: int = 0  # training rows (0 for objectives without data)

    def initial_point(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    @abstractmethod
    def loss(self, x: torch.Tensor) -> float:
        """The full training objective at ``x``."""

    @abstractmethod
    def grad(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:
        """A stochastic gradient at ``x`` on ``sample``; a fresh tensor the caller may keep."""

    @abstractmethod
    def sampler(
        self, rows: np.ndarray | None, batch_size: int | None, rng: np.random.Generator
    ) -> Callable[[], Sample]:
        """A stream of samples over ``rows`` (None: all rows), one per job."""

    def optimum(self) -> float | None:
        """F*, when known."""
        return None


class RowSampler:
    """Minibatches of ``batch_size`` rows drawn without replacement: consecutive chunks of a
    fresh random permutation of ``rows`` per epoch (the remainder of an epoch is skipped)."""

    def __init__(self, rows: np.ndarray, batch_size: int, rng: np.random.Generator, device):
        if batch_size > len(rows):
            raise ValueError(f"batch of {batch_size} rows from a shard of {len(rows)} rows")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.b = int(batch_size)
        self.rng = rng
        self.device = device
        self._perm = torch.empty(0, dtype=torch.long)
        self._pos = 0

    def __call__(self) -> torch.Tensor:
        if self._pos + self.b > len(self._perm):
            self._perm = torch.from_numpy(self.rows[self.rng.permutation(len(self.rows))])
            self._perm = self._perm.to(self.device)
            self._pos = 0
        out = self._perm[self._pos : self._pos + self.b]
        self._pos += self.b
        return out


class NoiseSampler:
    """sigma * N(0, I) vectors, drawn in small blocks (thousands of workers each hold one)."""

    BLOCK = 16

    def __init__(self, rng: np.random.Generator, dim: int, sigma: float, dtype, device, shift=None):
        self.rng, self.dim, self.sigma = rng, dim, sigma
        self.dtype, self.device = dtype, device
        self.shift = shift  # added to every vector (lets an objective fold a constant in)
        self._block = torch.empty(0)
        self._i = self.BLOCK

    def __call__(self) -> torch.Tensor:
        if self._i == self.BLOCK:
            z = self.rng.standard_normal((self.BLOCK, self.dim))
            z *= self.sigma
            self._block = torch.as_tensor(z, dtype=self.dtype, device=self.device)
            if self.shift is not None:
                self._block += self.shift
            self._i = 0
        self._i += 1
        return self._block[self._i - 1]


class DataObjective(Objective):
    """An objective over rows of a design matrix ``X`` with targets ``y``."""

    def __init__(self, X: np.ndarray, y: np.ndarray, dtype=torch.float64, device="cpu"):
        self.device = torch.device(device)
        self.dtype = dtype
        self.X = torch.as_tensor(np.ascontiguousarray(X), dtype=dtype, device=self.device)
        self.y = torch.as_tensor(np.ascontiguousarray(y), dtype=dtype, device=self.device)
        self.n_rows = int(self.X.shape[0])
        self._all_rows = np.arange(self.n_rows)

    def sampler(self, rows, batch_size, rng):
        if rows is None:
            rows = self._all_rows
        if batch_size is None:
            if len(rows) == self.n_rows:
                return lambda: None
            idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            return lambda: idx
        return RowSampler(rows, batch_size, rng, self.device)


class Quadratic(DataObjective):
    """Least squares F(x) = 0.5 * mean_i (a_i^T x - b_i)^2, x_0 = 0; F* by a direct solve."""

    name = "quadratic"

    def __init__(self, X, y, dtype=torch.float64, device="cpu"):
        super().__init__(X, y, dtype, device)
        self.dim = int(self.X.shape[1])
        self._f_star: float | None = None
        self._rows = torch.empty(0, dtype=dtype, device=self.device)  # reused gather buffer

    def loss(self, x: torch.Tensor) -> float:
        r = torch.mv(self.X, x) - self.y
        return 0.5 * float(torch.dot(r, r)) / self.n_rows

    def grad(self, x: torch.Tensor, sample: Sample) -> torch.Tensor:
        if sample is None:
            Xb, yb = self.X, self.y
        else:
            # gather into a reused buffer: a fresh 256 x 400 block per call costs page faults
            if self._rows.shape[0] != sample.shape[0]:
                self._rows = torch.empty(
                    sample.shape[0], self.dim, dtype=self.dtype, device=self.device
                )
            Xb = torch.index_select(self.X, 0, sample, out=self._rows)
            yb = self.y.index_select(0, sample)
        r = torch.mv(Xb, x).sub_(yb)
        return torch.mv(Xb.t(), r).div_(Xb.shape[0])

    def solution(self) -> torch.Tensor:
        X = self.X.double().cpu().numpy()
        y = self.y.double().cpu().numpy()
        sol = np.linalg.lstsq(X, y, rcond=None)[0]
        return torch.as_tensor(sol, dtype=self.dtype, device=self.device)

    def optimum(self) -> float:
        if self._f_star is None:
            X = self.X.double().cpu()
            y = self.y.double().cpu()
            sol = torch.as_tensor(np.linalg.lstsq(X.numpy(), y.numpy(), rcond=None)[0])
            r = X @ sol - y
            self._f_star = 0.5 * float(r @ r) / self.n_rows
        return self._f_star


class NoisyQuadratic(Objective):
    """f(x) = 0.5 * sum_i h_i (x_i - 1)^2 with h_i evenly spaced in [1/cond, 1]; a stochastic
    gradient is grad f(x) + sigma * N(0, I). No data; F* = 0; x_0 = 0."""

    name = "noisy_quadratic"

    def __init__(self, dim=10, sigma=1.0, cond=10.0, dtype=torch.float64, device="cpu"):
        if dim < 1 or sigma < 0 or cond < 1:
            raise ValueError("noisy_quadratic needs dim >= 1, sigma >= 0, cond >= 1")
        self.dim, self.sigma, self.dtype = int(dim), float(sigma), dtype
        self.device = torch.device(device)
        self.h = torch.linspace(1.0 / cond, 1.0, self.dim, dtype=dtype, device=self.device)
        self.x_star = torch.ones(self.dim, dtype=dtype, device=self.device)
        self._offset = -self.h * self.x_star

    def loss(self, x):
        e = x - self.x_star
        return 0.5 * float(torch.dot(self.h * e, e))

    def grad(self, x, sample):
        # a sample is sigma * z - h * x_star, so one fused op gives h * (x - x_star) + sigma * z
        return torch.addcmul(self._offset if sample is None else sample, self.h, x)

    def sampler(self, rows, batch_size, rng):
        if self.sigma == 0:
            return lambda: None
        return NoiseSampler(rng, self.dim, self.sigma, self.dtype, self.device, self._offset)

    def optimum(self):
        return 0.0


OBJECTIVES = ("quadratic", "noisy_quadratic")
