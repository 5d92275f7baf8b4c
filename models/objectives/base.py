"""What every objective is: the :class:`Objective` protocol the engines call (gradients, batched
gradients, samplers, evaluation), the row sampler of data objectives and the counter-based
noise of the synthetic one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models.noise import normals

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
        self,
        rows: np.ndarray | None,
        batch_size: int | None,
        rng: np.random.Generator,
        worker: int = 0,
    ) -> Callable[[], Sample]:
        """Worker ``worker``'s stream of samples over ``rows`` (None: all rows), one per job."""

    #: samples can be drawn for any (worker, job) pairs at once (:meth:`samples_at`)
    random_access = False

    def samples_at(self, workers: np.ndarray, seqs: np.ndarray) -> Sample:
        """Sample number ``seqs[i]`` (1-based) of worker ``workers[i]``, stacked (random-access
        objectives only)."""
        raise TypeError(f"{self.name} draws its samples in order, per worker")

    def grad_batch(self, points: torch.Tensor, samples: list | Sample) -> torch.Tensor:
        """Gradients at ``points[i]`` on sample i, stacked (B, dim). ``samples`` is what
        :meth:`samples_at` or :meth:`stack_samples` returned. The default computes them one by
        one."""
        return torch.stack([self.grad(p, z) for p, z in zip(points, samples, strict=True)])

    def stack_samples(self, samples: list) -> list | Sample:
        """Per-worker samples, in the form :meth:`grad_batch` takes."""
        return samples

    def batch_pays(self, batch_size: int | None) -> bool:
        """Whether many gradients computed in one batched call cost less than one by one (a
        modelled cost: on a GPU every small op is a kernel launch, so batching always pays)."""
        return self.device.type == "cuda"

    def optimum(self) -> float | None:
        """F*, when known."""
        return None

    def known_optimum(self, f_star: float | None) -> None:
        """F* computed before (a cache): :meth:`optimum` returns it without solving again."""
        self._f_star = f_star

    def theory_constants(self, batch_size: int | None) -> dict[str, float] | None:
        """L, Delta = F(x_0) - F* and sigma^2 = E||g(x*, xi) - grad F(x*)||^2 (the variance of
        one job's stochastic gradient at the solution x*) where they can be computed exactly;
        None otherwise."""
        return None

    def full_grad(self, x: torch.Tensor) -> torch.Tensor:
        """The gradient of the full training objective."""
        return self.grad(x, None)

    #: metrics besides the loss that :meth:`metrics` reports
    metric_names: tuple[str, ...] = ("grad_norm_sq",)

    def metrics(self, x: torch.Tensor) -> dict[str, float | None]:
        """Training loss, squared norm of the full gradient, and test metrics where they apply."""
        g = self.full_grad(x)
        return {"loss": self.loss(x), "grad_norm_sq": float(torch.dot(g, g))}


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


class CounterNoise:
    """Worker ``worker``'s stream of noise samples ``sigma * N(0, I) + shift``: sample s is a
    pure function of (seed, worker, s) (:mod:`models.noise`), so the event engine can draw any
    samples at once while a worker process draws them one by one, and both get the same."""

    def __init__(self, seed: int, worker: int, dim: int, sigma: float, dtype, device, shift):
        self.seed, self.worker, self.dim, self.sigma = seed, worker, dim, sigma
        self.dtype, self.device, self.shift = dtype, device, shift
        self.count = 0

    def __call__(self) -> torch.Tensor:
        self.count += 1
        return self.at(np.array([self.worker]), np.array([self.count]))[0]

    def at(self, workers: np.ndarray, seqs: np.ndarray) -> torch.Tensor:
        z = normals(self.seed, workers, seqs, self.dim)
        z *= self.sigma
        out = torch.as_tensor(z, dtype=self.dtype).to(self.device)
        if self.shift is not None:
            out += self.shift
        return out


class DataObjective(Objective):
    """An objective over rows of a design matrix ``X`` with targets ``y``."""

    classification = False

    def __init__(self, X: np.ndarray, y: np.ndarray, dtype=torch.float64, device="cpu"):
        self.device = torch.device(device)
        self.dtype = dtype
        self.X = self._tensor(X)
        self.y = self._targets(y)
        self.n_rows = int(self.X.shape[0])
        self._all_rows = np.arange(self.n_rows)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=self.dtype, device=self.device)

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        if self.classification:
            return torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        return self._tensor(y)

    def stack_samples(self, samples):
        first = samples[0]
        if first is None:
            return None
        if all(z.shape == first.shape for z in samples):
            return torch.stack(samples)
        return samples  # shards of different sizes: grad_batch goes one by one

    def sampler(self, rows, batch_size, rng, worker=0):
        if rows is None:
            rows = self._all_rows
        if batch_size is None:
            if len(rows) == self.n_rows:
                return lambda: None
            idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            return lambda: idx
        return RowSampler(rows, batch_size, rng, self.device)
