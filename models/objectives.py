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


class ModuleObjective(DataObjective):
    """Mean cross-entropy of a torch module on ``(X, y)`` plus ``l2/2 * ||x||^2``, where ``x`` is
    the module's parameters flattened into one vector. Gradients by autograd; test loss and
    accuracy on ``(X_test, y_test)`` when given."""

    classification = True
    metric_names = ("grad_norm_sq", "test_loss", "test_accuracy")

    def __init__(
        self, module: torch.nn.Module, X, y, X_test=None, y_test=None, l2: float = 0.0,
        dtype=torch.float32, device="cpu",
    ):  # fmt: skip
        super().__init__(X, y, dtype, device)
        self.module = module.to(device=self.device, dtype=dtype)
        self.l2 = float(l2)
        params = dict(self.module.named_parameters())
        self._names = list(params)
        self._shapes = [p.shape for p in params.values()]
        self._sizes = [p.numel() for p in params.values()]
        self.dim = sum(self._sizes)
        self._x0 = torch.cat([p.detach().reshape(-1) for p in params.values()])
        self.X_test = self._tensor(X_test) if X_test is not None else None
        self.y_test = self._targets(y_test) if y_test is not None else None
        self.n_classes = int(self.y.max()) + 1
        if self.X_test is None:
            self.metric_names = ("grad_norm_sq",)

    def initial_point(self) -> torch.Tensor:
        return self._x0.clone()

    def _params(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(x, self._sizes)
        return {n: p.view(s) for n, p, s in zip(self._names, parts, self._shapes, strict=True)}

    def _objective(self, x, X, y) -> torch.Tensor:
        out = torch.func.functional_call(self.module, self._params(x), (X,))
        loss = torch.nn.functional.cross_entropy(out, y)
        if self.l2:
            loss = loss + 0.5 * self.l2 * torch.dot(x, x)
        return loss

    def grad(self, x, sample):
        X, y = (self.X, self.y) if sample is None else (self.X[sample], self.y[sample])
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._objective(xr, X, y), xr)
        return g

    def loss(self, x) -> float:
        with torch.no_grad():
            return float(self._objective(x, self.X, self.y))

    def grad_batch(self, points, samples):
        if isinstance(samples, list):
            return super().grad_batch(points, samples)
        from torch.func import grad, vmap

        if samples is None:
            return vmap(grad(lambda x: self._objective(x, self.X, self.y)))(points)
        return vmap(grad(lambda x, idx: self._objective(x, self.X[idx], self.y[idx])))(
            points, samples
        )

    def metrics(self, x):
        out = super().metrics(x)
        if self.X_test is not None:
            with torch.no_grad():
                logits = torch.func.functional_call(self.module, self._params(x), (self.X_test,))
                out["test_loss"] = float(torch.nn.functional.cross_entropy(logits, self.y_test))
                acc = (logits.argmax(dim=1) == self.y_test).double().mean()
                out["test_accuracy"] = float(acc)
        return out


class LogReg(ModuleObjective):
    """L2-regularised multinomial logistic regression (convex); F* by L-BFGS in float64."""

    name = "logreg"

    def __init__(self, X, y, X_test=None, y_test=None, l2=1e-3, dtype=torch.float64,
                 device="cpu", seed=0):  # fmt: skip
        classes = int(np.max(y)) + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = torch.nn.Linear(X.shape[1], classes)
        super().__init__(module, X, y, X_test, y_test, l2, dtype, device)
        if not self.l2 > 0:
            raise ValueError(
                "logreg needs objective.l2 > 0 (the objective must be strongly convex)"
            )
        self._f_star: float | None = None

    def initial_point(self) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def solve(self, tol: float = 1e-12) -> tuple[np.ndarray, float]:
        """Minimise the full objective to high accuracy (scipy's L-BFGS-B, float64 on CPU)."""
        from scipy.optimize import minimize

        X = self.X.double().cpu()
        y = self.y.cpu()
        module = torch.nn.Linear(X.shape[1], self.n_classes).double()
        ref = ModuleObjective(module, X.numpy(), y.numpy(), l2=self.l2, dtype=torch.float64)

        def fg(w):
            xt = torch.from_numpy(w)
            with torch.enable_grad():
                xr = xt.clone().requires_grad_(True)
                f = ref._objective(xr, ref.X, ref.y)
                (g,) = torch.autograd.grad(f, xr)
            return float(f.detach()), g.numpy().copy()

        res = minimize(fg, np.zeros(self.dim), jac=True, method="L-BFGS-B",
                       options={"maxiter": 20000, "gtol": tol, "ftol": 0.0})  # fmt: skip
        return res.x, float(res.fun)

    def optimum(self) -> float:
        if self._f_star is None:
            self._f_star = self.solve()[1]
        return self._f_star


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class MLP(ModuleObjective):
    """A small multilayer perceptron with ReLU activations (non-convex)."""

    name = "mlp"

    def __init__(self, X, y, X_test=None, y_test=None, l2=0.0, dtype=torch.float32,
                 device="cpu", seed=0, hidden=(64, 64)):  # fmt: skip
        classes = int(np.max(y)) + 1
        widths = [X.shape[1], *hidden]

        def build():
            layers: list[torch.nn.Module] = []
            for a, b in zip(widths[:-1], widths[1:], strict=True):
                layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
            return torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], classes))

        super().__init__(_seeded(seed, build), X, y, X_test, y_test, l2, dtype, device)


class CNN(ModuleObjective):
    """A small convolutional network for image-shaped rows (``image_shape`` = C, H, W)."""

    name = "cnn"

    def __init__(self, X, y, image_shape, X_test=None, y_test=None, l2=0.0,
                 dtype=torch.float32, device="cpu", seed=0, channels=32):  # fmt: skip
        c, h, w = (int(v) for v in image_shape)
        classes = int(np.max(y)) + 1

        def build():
            nn = torch.nn
            return nn.Sequential(
                nn.Unflatten(1, (c, h, w)),
                nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(),
                nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(2 * channels * (h // 2) * (w // 2), 128), nn.ReLU(),
                nn.Linear(128, classes),
            )  # fmt: skip

        super().__init__(_seeded(seed, build), X, y, X_test, y_test, l2, dtype, device)


OBJECTIVES = ("quadratic", "noisy_quadratic", "logreg", "mlp", "cnn")
