"""From a composed config to the parts of a run: data, objective, worker times, server rule,
per-worker samplers and the evaluator. Everything here runs before any work starts, so every
bad input is reported here as a one-line ConfigError."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import datasets
from models.objectives import CNN, MLP, LogReg, NoisyQuadratic, Objective, Quadratic
from pipeline import PROJECT_ROOT, ConfigError
from pipeline.config import resolve_lr, validate
from pipeline.evaluation import Evaluator
from pipeline.methods import ServerRule, build_rule
from pipeline.splits import class_counts, split_rows
from pipeline.theory import optimal_batch
from pipeline.topology import JobTimes, mean_times

DATA_DIR = PROJECT_ROOT / "data"  # the data step's (DVC's) folder: pipeline.data writes here
DATA_DIR_ENV = "ASGD_DATA_DIR"  # where default data files are read and built instead (tests)
SYNTHETIC_OBJECTIVES = {"noisy_quadratic": NoisyQuadratic}
CLASSIFIERS = ("logreg", "mlp", "cnn")


def stream(seed: int, purpose: int, worker: int = 0) -> np.random.Generator:
    """The seeded generator for one purpose (1 times, 2 samples, 7 the rule) and worker."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, worker)))


def data_dir() -> Path:
    """The folder of default data files ``<name>.npz``: ``$ASGD_DATA_DIR`` when set (the test
    suite points it at a temporary folder), else the project's ``data/``."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override) if override else DATA_DIR


def dataset_path(cfg: Any) -> Path | None:
    """The data file a run reads; built by the data step when it is the default and missing.
    An explicit ``dataset.path`` that does not exist is an error."""
    ds = cfg.dataset
    if ds.name == "none":
        return None
    if ds.path:
        path = Path(ds.path)
        if not path.exists():
            raise ConfigError(f"data file not found: {path} (dataset.path)")
        return path
    path = data_dir() / f"{ds.name}.npz"
    if not path.exists():
        if ds.name not in datasets.BUILDERS:
            raise ConfigError(
                f"unknown dataset {ds.name!r}; choose one of {', '.join(datasets.BUILDERS)}"
            )
        datasets.build(ds.name, path, seed=ds.seed, **dict(ds.params or {}))
    return path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return dev


def build_objective(cfg: Any, path: Path | None, device: torch.device | None = None) -> Objective:
    oc = cfg.objective
    dtype = torch.float64 if oc.dtype == "float64" else torch.float32
    device = resolve_device(oc.device) if device is None else device
    if oc.name in SYNTHETIC_OBJECTIVES:
        try:
            return SYNTHETIC_OBJECTIVES[oc.name](oc.dim, oc.sigma, oc.cond, dtype, device)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if path is None:
        raise ConfigError(f"objective {oc.name!r} needs data; dataset=none gives none")
    a = datasets.load_npz(path)
    if "X" not in a or "y" not in a:
        raise ConfigError(f"{path} has no arrays X and y")
    X, y = a["X"], a["y"]
    if oc.name == "quadratic":
        return Quadratic(X, y, dtype, device)
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"objective {oc.name!r} is a classifier but dataset {cfg.dataset.name!r} has "
            "real-valued targets; use objective=quadratic"
        )
    test = {"X_test": a.get("X_test"), "y_test": a.get("y_test")}
    common = dict(dtype=dtype, device=device, seed=oc.init_seed, **test)
    try:
        if oc.name == "logreg":
            return LogReg(X, y, l2=1e-3 if oc.l2 is None else oc.l2, **common)
        if oc.name == "mlp":
            return MLP(X, y, l2=oc.l2 or 0.0, hidden=tuple(oc.hidden), **common)
        if "image_shape" not in a:
            raise ConfigError(
                f"objective cnn needs image-shaped data; dataset {cfg.dataset.name!r} is tabular "
                "(use digits, or objective=mlp)"
            )
        return CNN(X, y, a["image_shape"], l2=oc.l2 or 0.0, channels=oc.channels, **common)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def worker_rows(cfg: Any, objective: Objective, n: int) -> list[np.ndarray | None]:
    """The rows each worker samples from (None: all rows)."""
    ds = cfg.dataset
    if ds.split != "none" and not objective.n_rows:
        raise ConfigError(
            f"dataset.split={ds.split} needs a dataset; objective {cfg.objective.name} has none"
        )
    y = objective.y.cpu().numpy() if objective.n_rows else np.zeros(0)
    return split_rows(y, n, ds.split, ds.alpha, ds.seed)


def optimal_m(cfg: Any, objective: Objective) -> int | None:
    """m* = max(1, ceil(sigma^2 / eps)) for Rennala's S and Ringmaster's R, where sigma^2 is
    known (the optimizer's ``sigma2``, else the objective's exact value) and a target eps is
    set; None otherwise (the rule then uses n)."""
    if cfg.target is None:
        return None
    sigma2 = cfg.optimizer.sigma2
    if sigma2 is None:
        sigma2 = (objective.theory_constants(cfg.batch_size) or {}).get("sigma2")
    return optimal_batch(sigma2, cfg.target) if sigma2 else None


def rule_options(cfg: Any, objective: Objective) -> dict:
    """The method's own config keys, with S and R resolved."""
    opt = cfg.optimizer
    options = {k: opt[k] for k in opt if k not in ("name", "lr", "sigma2")}
    for key in ("batch", "threshold"):
        if opt.name in ("rennala", "ringmaster") and options.get(key, 0) is None:
            options[key] = optimal_m(cfg, objective)
    return options


@dataclass
class Experiment:
    """Everything a run needs, built and checked before any work starts."""

    cfg: Any
    objective: Objective
    rule: ServerRule
    times: JobTimes
    rows: list[np.ndarray | None]
    evaluator: Evaluator
    data_path: Path | None
    lr: float
    eval_every: int

    def class_counts(self) -> list[list[int]] | None:
        if not getattr(self.objective, "classification", False):
            return None
        return class_counts(self.objective.y.cpu().numpy(), self.rows)

    @property
    def n_workers(self) -> int:
        return self.rule.n

    def samplers(self) -> list:
        bs = self.cfg.batch_size
        return [
            self.objective.sampler(rows, bs, stream(self.cfg.seed, 2, w))
            for w, rows in enumerate(self.rows)
        ]


def build_times(cfg: Any) -> JobTimes:
    t = cfg.topology
    try:
        if t.name == "trace":
            from pipeline.trace import TraceTimes

            return TraceTimes.load(t.trace_path, t.n_workers)
        if t.name == "native":
            return JobTimes(np.ones(t.n_workers), "none", cfg.seed)
        taus = mean_times(
            t.name,
            t.n_workers,
            t.get("tau", 1.0),
            stragglers=t.get("stragglers", 1),
            factor=t.get("factor", 100.0),
            fraction_fast=t.get("fraction_fast", 0.5),
            tau_fast=t.get("tau_fast", 1.0),
            tau_slow=t.get("tau_slow", 10.0),
            times=list(t.times) if t.name == "custom" else None,
        )
        return JobTimes(taus, t.noise, cfg.seed, gamma_shape=t.gamma_shape, jitter=t.jitter)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_experiment(cfg: Any) -> Experiment:
    validate(cfg)
    lr = resolve_lr(cfg)
    times = build_times(cfg)
    n = times.n_workers
    path = dataset_path(cfg)
    objective = build_objective(cfg, path)
    try:
        rule = build_rule(cfg.optimizer.name, n, lr, rule_options(cfg, objective), cfg.seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    rows = worker_rows(cfg, objective, n)
    bs = cfg.batch_size
    if bs is not None and objective.n_rows:
        smallest = min(objective.n_rows if r is None else len(r) for r in rows)
        if bs > smallest:
            raise ConfigError(
                f"batch_size={bs} is larger than the dataset ({smallest} rows per worker)"
            )
    f_star = objective.optimum()
    evaluator = Evaluator(objective, f_star)
    eval_every = cfg.eval_every or auto_eval_every(cfg, rule, times)
    return Experiment(cfg, objective, rule, times, rows, evaluator, path, lr, eval_every)


def auto_eval_every(cfg: Any, rule: ServerRule, times: JobTimes, points: int = 200) -> int:
    """About ``points`` evaluations over the run's expected number of updates."""
    if cfg.budget.gradients is not None:
        grads = cfg.budget.gradients
    else:
        grads = cfg.budget.time * float(np.sum(1.0 / times.taus))
    return max(1, int(grads * rule.updates_per_gradient / points))
