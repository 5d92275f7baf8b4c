"""Objectives that are torch modules: any module with a loss (:class:`ModuleObjective`, what
``objective=torch_module`` wraps), and the built-in logistic regression, MLP and small CNN on
classification data, each with its cross-entropy loss and test accuracy."""

from __future__ import annotations

import numpy as np
import torch

from models.objectives.base import DataObjective


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; an output of shape (rows, 1) meets targets of shape (rows,)."""
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    return torch.nn.functional.mse_loss(output, target)


#: the losses named in a config (``objective.loss``); a user's own is any callable like these
LOSSES = {"cross_entropy": torch.nn.functional.cross_entropy, "mse": mse}


class ModuleObjective(DataObjective):
    """Mean ``loss(module(X), y)`` of a torch module on ``(X, y)`` plus ``l2/2 * ||x||^2``,
    where ``x`` is the module's parameters flattened into one vector. ``loss`` is a name of
    :data:`LOSSES` or a callable ``loss(output, target) -> scalar``. Gradients by autograd;
    test loss on ``(X_test, y_test)`` when given, and test accuracy for cross-entropy.

    Targets are class labels (long) for cross-entropy and for a callable loss given integer
    targets; real values (the objective's dtype) otherwise."""

    classification = True
    metric_names = ("grad_norm_sq", "test_loss", "test_accuracy")

    def __init__(
        self, module: torch.nn.Module, X, y, X_test=None, y_test=None, l2: float = 0.0,
        dtype=torch.float32, device="cpu", loss="cross_entropy",
    ):  # fmt: skip
        named = isinstance(loss, str)
        self.criterion = LOSSES[loss] if named else loss
        self.accuracy = named and loss == "cross_entropy"
        self.classification = loss == "cross_entropy" or (
            not named and np.asarray(y).dtype.kind in "biu"
        )
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
        if self.classification:
            self.n_classes = int(self.y.max()) + 1
        if self.X_test is None:
            self.metric_names = ("grad_norm_sq",)
        elif not self.accuracy:
            self.metric_names = ("grad_norm_sq", "test_loss")

    def initial_point(self) -> torch.Tensor:
        return self._x0.clone()

    def _params(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(x, self._sizes)
        return {n: p.view(s) for n, p, s in zip(self._names, parts, self._shapes, strict=True)}

    def _objective(self, x, X, y) -> torch.Tensor:
        out = torch.func.functional_call(self.module, self._params(x), (X,))
        loss = self.criterion(out, y)
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
                output = torch.func.functional_call(self.module, self._params(x), (self.X_test,))
                out["test_loss"] = float(self.criterion(output, self.y_test))
                if self.accuracy:
                    acc = (output.argmax(dim=1) == self.y_test).double().mean()
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


class TorchModule(ModuleObjective):
    """A user's own torch module (``objective=torch_module``) with a named or callable loss; the
    caller builds (and seeds) the module."""

    name = "torch_module"
