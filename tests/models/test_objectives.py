"""Objectives and datasets: gradients against finite differences, F* against independent
solvers, offline deterministic builds, splits across workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import datasets
from models.objectives import CNN, MLP, LogReg, NoisyQuadratic, Quadratic
from pipeline import ConfigError
from pipeline.core.splits import class_counts, split_rows


@pytest.fixture(scope="module")
def wine():
    return datasets.wine()


@pytest.fixture(scope="module")
def digits():
    return datasets.digits()


def make(name, data):
    X, y = data["X"][:120], data["y"][:120]
    f64 = dict(dtype=torch.float64)
    if name == "quadratic":
        return Quadratic(X, y.astype(np.float64), **f64)
    if name == "noisy_quadratic":
        return NoisyQuadratic(dim=7, sigma=0.0, cond=5.0, **f64)
    if name == "logreg":
        return LogReg(X, y, l2=1e-2, **f64)
    if name == "mlp":
        return MLP(X, y, l2=1e-3, hidden=(8,), **f64)
    return CNN(X, y, data["image_shape"], l2=1e-3, channels=2, **f64)


def loss_on_rows(obj, x, rows):
    """The objective restricted to some rows, computed without the objective's gradient code."""
    if isinstance(obj, Quadratic):
        r = obj.X[rows] @ x - obj.y[rows]
        return 0.5 * float(r @ r) / len(rows)
    with torch.no_grad():
        return float(obj._objective(x, obj.X[rows], obj.y[rows]))


@pytest.mark.parametrize("name", ["quadratic", "noisy_quadratic", "logreg", "mlp", "cnn"])
def test_gradient_matches_finite_differences(name, digits):
    obj = make(name, digits)
    gen = torch.Generator().manual_seed(0)
    x = obj.initial_point() + 0.1 * torch.randn(obj.dim, generator=gen, dtype=torch.float64)
    rows = torch.arange(0, 120, 3) if obj.n_rows else None
    for sample in [None, rows] if rows is not None else [None]:
        g = obj.grad(x, sample)
        assert g.shape == (obj.dim,)
        f = obj.loss if sample is None else (lambda z: loss_on_rows(obj, z, rows))
        for _ in range(3):
            v = torch.randn(obj.dim, generator=gen, dtype=torch.float64)
            v /= v.norm()
            h = 1e-5
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
            assert float(g @ v) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_quadratic_optimum_against_numpy_lstsq():
    d = datasets.lstsq_paper(n_rows=500, dim=20)
    obj = Quadratic(d["X"], d["y"])
    sol = np.linalg.lstsq(d["X"], d["y"], rcond=None)[0]
    expected = 0.5 * np.mean((d["X"] @ sol - d["y"]) ** 2)
    assert obj.optimum() == pytest.approx(expected, rel=1e-9, abs=1e-15)
    g = obj.full_grad(torch.as_tensor(sol))
    assert float(g @ g) < 1e-20


def test_logreg_optimum_against_scikit_learn(wine):
    """scikit-learn's multinomial logistic regression minimises
    0.5 ||w||^2 + C sum_i CE_i; with a constant feature for the bias and C = 1 / (n l2) that is
    n C times mean CE + l2/2 ||(W, b)||^2, our objective."""
    from sklearn.linear_model import LogisticRegression

    X, y, l2 = wine["X"], wine["y"], 1e-2
    obj = LogReg(X, y, l2=l2)
    Xa = np.hstack([X, np.ones((len(X), 1))])
    clf = LogisticRegression(C=1.0 / (len(X) * l2), fit_intercept=False, tol=1e-12,
                             max_iter=100000).fit(Xa, y)  # fmt: skip
    W = clf.coef_  # classes x (d + 1)
    x_ref = torch.as_tensor(np.concatenate([W[:, :-1].reshape(-1), W[:, -1]]))
    assert obj.optimum() == pytest.approx(obj.loss(x_ref), rel=1e-8)
    assert obj.optimum() <= obj.loss(x_ref) + 1e-12


@pytest.mark.parametrize("name", sorted(datasets.BUILDERS))
def test_every_dataset_builds_offline_and_deterministically(name, tmp_path, monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("a dataset builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    a = datasets.build(name, tmp_path / "a.npz", seed=0)
    b = datasets.build(name, tmp_path / "b.npz", seed=0)
    assert a.read_bytes() == b.read_bytes()
    arrays = datasets.load_npz(a)
    assert arrays["X"].ndim == 2 and len(arrays["X"]) == len(arrays["y"])
    if "X_test" in arrays:  # classification: integer labels, standardised on the train split
        assert arrays["y"].dtype == np.int64 and len(arrays["X_test"]) == len(arrays["y_test"])
        np.testing.assert_allclose(arrays["X"].mean(axis=0), 0.0, atol=1e-9)
        assert set(np.unique(arrays["y_test"])) <= set(np.unique(arrays["y"]))
    c = datasets.build(name, tmp_path / "c.npz", seed=1)
    if name not in ("digits", "breast_cancer", "wine"):  # fixed data; the seed moves the split
        assert not np.array_equal(datasets.load_npz(c)["X"][:5], arrays["X"][:5])


def test_iid_split_partitions_rows(digits):
    y = digits["y"]
    rows = split_rows(y, 7, "iid", seed=0)
    sizes = [len(r) for r in rows]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(y)
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(len(y)))


def test_label_sorted_split_gives_each_worker_few_classes(digits):
    y = digits["y"]
    rows = split_rows(y, 10, "label_sorted", seed=0)
    counts = np.array(class_counts(y, rows))
    assert counts.sum() == len(y) and (counts.sum(axis=1) > 0).all()
    # 10 workers, 10 classes of unequal size: each shard is (almost) one class
    assert ((counts > 0).sum(axis=1) <= 3).all()
    assert (counts.max(axis=1) / counts.sum(axis=1) >= 0.9).all()


def test_dirichlet_split_concentration(digits):
    y = digits["y"]
    even = np.array(class_counts(y, split_rows(y, 5, "dirichlet", alpha=1000.0, seed=0)))
    skew = np.array(class_counts(y, split_rows(y, 5, "dirichlet", alpha=0.3, seed=0)))
    assert even.sum() == skew.sum() == len(y)
    share = lambda c: c / c.sum(axis=0, keepdims=True)  # noqa: E731
    assert np.abs(share(even) - 0.2).max() < 0.05  # large alpha: near-equal shares
    assert np.abs(share(skew) - 0.2).max() > 0.3  # small alpha: very uneven


def test_split_errors():
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(ConfigError, match="alpha must be positive"):
        split_rows(y, 2, "dirichlet", alpha=0.0)
    with pytest.raises(ConfigError, match="leaves workers without data: 12 rows for 20"):
        split_rows(y, 20, "iid")
    with pytest.raises(ConfigError, match="leaves .* worker.* without data"):
        split_rows(y, 12, "dirichlet", alpha=0.01, seed=0)
    with pytest.raises(ConfigError, match="needs class labels"):
        split_rows(np.linspace(0, 1, 12), 2, "dirichlet")


def test_data_step_cli_builds_from_the_dataset_config(tmp_path):
    """The data step writes into its project's data/ (the DVC stage's output), or where
    $ASGD_DATA_DIR says when it is set (where every run then reads); run on a copy of the project
    so the repository stays untouched."""
    import os
    import shutil
    import subprocess
    import sys

    from pipeline import PROJECT_ROOT

    project = tmp_path / "project"
    for part in ("pipeline", "models", "conf"):
        shutil.copytree(PROJECT_ROOT / part, project / part,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "ASGD_DATA_DIR"}
    out = subprocess.run([sys.executable, "-m", "pipeline.data", "small_lstsq"],
                         capture_output=True, text=True, cwd=project, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    path = project / "data" / "small_lstsq.npz"
    assert out.stdout.strip() == str(path)
    assert datasets.load_npz(path)["X"].shape == (64, 4)  # conf/dataset/small_lstsq.yaml
    elsewhere = tmp_path / "elsewhere"
    env_elsewhere = {**env, "ASGD_DATA_DIR": str(elsewhere)}
    out = subprocess.run([sys.executable, "-m", "pipeline.data", "small_lstsq"], cwd=project,
                         capture_output=True, text=True, env=env_elsewhere)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(elsewhere / "small_lstsq.npz")
    assert datasets.load_npz(elsewhere / "small_lstsq.npz")["X"].shape == (64, 4)
    bad = subprocess.run([sys.executable, "-m", "pipeline.data", "nope"],
                         capture_output=True, text=True, cwd=project, env=env)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: name datasets from")


@pytest.mark.parametrize("objective", ["quadratic", "noisy_quadratic", "logreg", "mlp", "cnn"])
def test_batched_gradients_equal_one_by_one(objective, tmp_path):
    """``grad_batch`` (the event engine's batched replay; always used on a GPU) against
    ``grad`` point by point, with the samples the engine would draw."""
    from pipeline.compose.build import build_experiment
    from tests.conftest import compose_cfg

    data = {"quadratic": "small_lstsq", "noisy_quadratic": "none", "cnn": "digits"}.get(
        objective, "wine"
    )
    cfg = compose_cfg(
        "~experiment", f"objective={objective}", f"dataset={data}", "optimizer=asgd",
        "optimizer.lr=0.1", "topology.n_workers=3", "batch_size=4", "budget.gradients=10",
        "tracking=none", *(["objective.channels=2"] if objective == "cnn" else []),
    )  # fmt: skip
    exp = build_experiment(cfg)
    obj = exp.objective
    gen = torch.Generator().manual_seed(0)
    points = torch.stack(
        [obj.initial_point() + 0.1 * torch.randn(obj.dim, generator=gen, dtype=obj.dtype)
         for _ in range(5)]
    )  # fmt: skip
    workers, seqs = np.array([0, 2, 1, 0, 2]), np.array([1, 1, 1, 2, 2])
    if obj.random_access:
        samples = obj.samples_at(workers, seqs)
        one = [obj._noise(int(w)).at(np.array([w]), np.array([s]))[0]
               for w, s in zip(workers, seqs, strict=True)]  # fmt: skip
    else:
        samplers = exp.samplers()
        one = [samplers[w]() for w in workers]
        samples = obj.stack_samples(one)
    batched = obj.grad_batch(points, samples)
    expected = torch.stack([obj.grad(p, z) for p, z in zip(points, one, strict=True)])
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-6)
