"""Dataset builders: each writes ``data/<name>.npz`` with arrays ``X``, ``y`` (and ``X_test``,
``y_test`` when there is a test set). Everything is generated or shipped offline; the same name
and seed give byte-identical files."""

from __future__ import annotations

import os
import tempfile
import zipfile
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


def _standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale features with the training split's mean and standard deviation only."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def _train_test(X, y, seed: int, test_fraction: float, image_shape=None) -> Arrays:
    """Stratified seeded train/test split; features standardised with training statistics."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(test_fraction * len(idx)))]] = True
    X = np.asarray(X, dtype=np.float64)
    X_train, X_test = _standardize(X[~test], X[test])
    out = {
        "X": X_train,
        "y": np.asarray(y[~test], dtype=np.int64),
        "X_test": X_test,
        "y_test": np.asarray(y[test], dtype=np.int64),
    }
    if image_shape is not None:
        out["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    return out


def synthetic_classification(
    seed: int = 0, n_rows: int = 3000, dim: int = 20, classes: int = 4, test_fraction: float = 0.2
) -> Arrays:
    """Seeded Gaussian clusters (scikit-learn's make_classification)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n_rows, n_features=dim, n_informative=min(dim, 10), n_redundant=0,
        n_classes=classes, n_clusters_per_class=2, class_sep=1.0, random_state=seed,
    )  # fmt: skip
    return _train_test(X, y, seed, test_fraction)


def _sklearn_bundled(loader: str, seed: int, test_fraction: float, image_shape=None) -> Arrays:
    import sklearn.datasets

    d = getattr(sklearn.datasets, loader)()  # shipped inside scikit-learn: no download
    return _train_test(d.data, d.target, seed, test_fraction, image_shape)


def digits(seed: int = 0, test_fraction: float = 0.2) -> Arrays:
    """scikit-learn's 8 x 8 handwritten digits (1797 images, 10 classes)."""
    return _sklearn_bundled("load_digits", seed, test_fraction, image_shape=(1, 8, 8))


def breast_cancer(seed: int = 0, test_fraction: float = 0.2) -> Arrays:
    return _sklearn_bundled("load_breast_cancer", seed, test_fraction)


def wine(seed: int = 0, test_fraction: float = 0.2) -> Arrays:
    return _sklearn_bundled("load_wine", seed, test_fraction)


def mnist1d(seed: int = 0, num_samples: int = 5000) -> Arrays:
    """MNIST-1D generated offline by the mnist1d package (its make_dataset; never its download
    path). Its own train/test split (80/20); features standardised with training statistics."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    X, Xt = _standardize(np.asarray(d["x"], np.float64), np.asarray(d["x_test"], np.float64))
    return {
        "X": X,
        "y": np.asarray(d["y"], np.int64),
        "X_test": Xt,
        "y_test": np.asarray(d["y_test"], np.int64),
    }


BUILDERS: dict[str, Callable[..., Arrays]] = {
    "lstsq_paper": lstsq_paper,
    "small_lstsq": small_lstsq,
    "synthetic_classification": synthetic_classification,
    "digits": digits,
    "breast_cancer": breast_cancer,
    "wine": wine,
    "mnist1d": mnist1d,
}


def save_npz(arrays: Arrays, path: str | os.PathLike) -> Path:
    """Write ``arrays`` to ``path`` atomically (parallel jobs may race to build the same file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        # a fixed timestamp in the zip entries makes the file byte-identical across builds
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
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
