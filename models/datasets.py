"""Dataset builders: each writes ``data/<name>.npz`` with arrays ``X``, ``y`` (and ``X_test``,
``y_test`` when there is a test set). Everything is generated or shipped offline; the same name
and seed give byte-identical files."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]


def lstsq_paper(seed: int = 0, n_rows: int = 10000, dim: int = 400, noise: float = 1e-5) -> Arrays:
    """The paper's least squares: A with entries U[0,1]/sqrt(dim), x_true ~ N(0, I),
    b = A x_true + noise * N(0, 1)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, size=(n_rows, dim)) / np.sqrt(dim)
    x_true = rng.standard_normal(dim)
    y = X @ x_true + noise * rng.standard_normal(n_rows)
    return {"X": X, "y": y, "x_true": x_true}


def small_lstsq(seed: int = 0, n_rows: int = 64, dim: int = 4, noise: float = 0.1) -> Arrays:
    """A small well-conditioned least-squares problem for traces and quick checks."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, dim))
    x_true = rng.standard_normal(dim)
    y = X @ x_true + noise * rng.standard_normal(n_rows)
    return {"X": X, "y": y, "x_true": x_true}


BUILDERS: dict[str, Callable[..., Arrays]] = {
    "lstsq_paper": lstsq_paper,
    "small_lstsq": small_lstsq,
}


def save_npz(arrays: Arrays, path: str | os.PathLike) -> Path:
    """Write ``arrays`` to ``path`` atomically (parallel jobs may race to build the same file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def build(name: str, path: str | os.PathLike, **params) -> Path:
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(BUILDERS)}")
    return save_npz(BUILDERS[name](**params), path)


def load_npz(path: str | os.PathLike) -> Arrays:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
