"""Least squares on a data file (the paper's objective) and the noisy quadratic (exact
sigma^2, no data)."""

from __future__ import annotations

import numpy as np
import torch

from models.objectives.base import CounterNoise, DataObjective, Objective, Sample


class Quadratic(DataObjective):
    """Least squares F(x) = 0.5 * mean_i (a_i^T x - b_i)^2, x_0 = 0; F* by a direct solve."""

    name = "quadratic"

    def __init__(self, X, y, dtype=torch.float64, device="cpu"):
        super().__init__(X, y, dtype, device)
        self.dim = int(self.X.shape[1])
        self._f_star: float | None = None
        self._x_star: torch.Tensor | None = None
        self._rows = torch.empty(0, dtype=dtype, device=self.device)  # reused gather buffer
        self._neg_y: torch.Tensor | None = None  # -y, for the batched residual

    def loss(self, x: torch.Tensor) -> float:
        r = torch.mv(self.X, x) - self.y
        return 0.5 * float(torch.dot(r, r)) / self.n_rows

    def metrics(self, x: torch.Tensor) -> dict[str, float | None]:
        # one residual for the loss and the full gradient: two passes over X, not three
        r = torch.mv(self.X, x).sub_(self.y)
        g = torch.mv(self.X.t(), r).div_(self.n_rows)
        return {"loss": 0.5 * float(torch.dot(r, r)) / self.n_rows,
                "grad_norm_sq": float(torch.dot(g, g))}  # fmt: skip

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

    def grad_batch(self, points, samples):
        if isinstance(samples, list):
            return super().grad_batch(points, samples)
        if samples is None:  # full batch: one (B, N) residual
            r = torch.mm(points, self.X.t()).sub_(self.y)
            return torch.mm(r, self.X).div_(self.n_rows)
        Xb = self.X[samples]  # (B, b, d)
        if self._neg_y is None:
            self._neg_y = self.y.neg()
        # the residual in one op (a launch fewer on a GPU): -y + Xb x
        r = torch.baddbmm(self._neg_y[samples].unsqueeze(2), Xb, points.unsqueeze(2))
        return torch.bmm(Xb.transpose(1, 2), r).squeeze(2).div_(samples.shape[1])

    def batch_pays(self, batch_size):
        if self.device.type == "cuda":
            return True
        # the rows of a batch of gradients must stay in cache (measured: a 256 x 400 float64
        # gather per gradient is ~2x slower batched than one by one)
        rows = self.n_rows if batch_size is None else batch_size
        return rows * self.dim * self.X.element_size() <= 64 * 1024

    def theory_constants(self, batch_size):
        """L = lambda_max(A^T A / N), Delta = F(x_0) - F*, and sigma^2 = E||g(x*, xi) -
        grad F(x*)||^2 at the solution x*: with g_i(x) = a_i (a_i^T x - b_i), the variance of
        the mean of b rows drawn without replacement is (1/b) (N-b)/(N-1) (1/N) sum_i
        ||g_i(x*) - grad F(x*)||^2 (0 for full gradients)."""
        X = self.X.double().cpu()
        y = self.y.double().cpu()
        N = X.shape[0]
        L = float(torch.linalg.eigvalsh(X.T @ X / N)[-1])
        x0 = self.initial_point().double().cpu()
        x_star = self.solution()
        per_row = X * (X @ x_star - y)[:, None]  # gradients of the single-row losses at x*
        spread = float(((per_row - per_row.mean(0)) ** 2).sum(1).mean())
        b = N if batch_size is None else batch_size
        sigma2 = spread / b * (N - b) / max(N - 1, 1)  # rows drawn without replacement
        r0 = X @ x0 - y  # on the CPU copy, whatever the objective's device
        delta = 0.5 * float(r0 @ r0) / N - self.optimum()
        return {"L": L, "delta": delta, "sigma2": sigma2}

    def solution(self) -> torch.Tensor:
        """x*, the least-squares solution (float64, CPU)."""
        if self._x_star is None:
            X = self.X.double().cpu().numpy()
            y = self.y.double().cpu().numpy()
            self._x_star = torch.as_tensor(np.linalg.lstsq(X, y, rcond=None)[0])
        return self._x_star

    def optimum(self) -> float:
        if self._f_star is None:
            X = self.X.double().cpu()
            y = self.y.double().cpu()
            r = X @ self.solution() - y
            self._f_star = 0.5 * float(r @ r) / self.n_rows
        return self._f_star


class NoisyQuadratic(Objective):
    """f(x) = 0.5 * sum_i h_i (x_i - 1)^2 with h_i evenly spaced in [1/cond, 1]; a stochastic
    gradient is grad f(x) + sigma * N(0, I). No data; F* = 0; x_0 = 0."""

    name = "noisy_quadratic"

    random_access = True

    def __init__(
        self, dim=10, sigma=1.0, cond=10.0, dtype=torch.float64, device="cpu", seed: int = 0
    ):
        if dim < 1 or sigma < 0 or cond < 1:
            raise ValueError("noisy_quadratic needs dim >= 1, sigma >= 0, cond >= 1")
        self.dim, self.sigma, self.dtype = int(dim), float(sigma), dtype
        self.seed = int(seed)  # the run's seed: each worker's noise stream derives from it
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

    def sampler(self, rows, batch_size, rng, worker=0):
        if self.sigma == 0:
            return lambda: None
        return self._noise(worker)

    def _noise(self, worker: int) -> CounterNoise:
        return CounterNoise(
            self.seed, worker, self.dim, self.sigma, self.dtype, self.device, self._offset
        )

    def samples_at(self, workers, seqs):
        if self.sigma == 0:
            return None
        return self._noise(0).at(workers, seqs)

    def grad_batch(self, points, samples):
        offset = self._offset if samples is None else samples
        return torch.addcmul(offset, self.h, points)

    def batch_pays(self, batch_size):
        return True  # no data to gather: a batch is a few vector ops

    def optimum(self):
        return 0.0

    def theory_constants(self, batch_size):
        # the noise is additive, so sigma^2 = E||sigma z||^2 = dim * sigma^2 at every x (and x*)
        return {
            "L": float(self.h.max()),
            "delta": self.loss(self.initial_point()),
            "sigma2": self.dim * self.sigma**2,
        }
