"""From a composed config to the parts of a run: data, objective, worker times, server rule,
per-worker samplers and the evaluator. Everything here runs before any work starts, so every
bad input is reported here as a one-line ConfigError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.objectives import CNN, MLP, LogReg, NoisyQuadratic, Objective, Quadratic
from pipeline import ConfigError
from pipeline.compose import resources, usermodel
from pipeline.compose.constants import exact_constants
from pipeline.compose.datafiles import data_key, dataset_path, existing_data
from pipeline.compose.inputs import check_builder_params, inspect_npz, load_data
from pipeline.compose.plugins import build_plugin, is_plugin
from pipeline.compose.validate import resolve_lr, validate
from pipeline.core.devices import resolve_device
from pipeline.core.evaluation import Evaluator
from pipeline.core.methods import ServerRule, build_rule
from pipeline.core.splits import class_counts, split_rows
from pipeline.core.streams import RULE, SAMPLES, stream
from pipeline.core.theory import optimal_batch
from pipeline.core.topology import JobTimes, mean_times

SYNTHETIC_OBJECTIVES = {"noisy_quadratic": NoisyQuadratic}


def build_objective(cfg: Any, path: Path | None, device: torch.device | None = None) -> Objective:
    oc = cfg.objective
    dtype = torch.float64 if oc.dtype == "float64" else torch.float32
    device = resolve_device(oc.device) if device is None else device
    if oc.name in SYNTHETIC_OBJECTIVES:
        try:
            return SYNTHETIC_OBJECTIVES[oc.name](
                oc.dim, oc.sigma, oc.cond, dtype, device, seed=cfg.seed
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if path is None:
        raise ConfigError(f"objective {oc.name!r} needs data; dataset=none gives none")
    a = load_data(path, oc.name, data_key(cfg), oc.get("loss"))  # every check of the data
    X, y = a["X"], a["y"]
    if oc.name == "quadratic":
        return Quadratic(X, y, dtype, device)
    if oc.name == "torch_module":
        return usermodel.build(oc, a, dtype, device, l2=oc.l2 or 0.0)
    test = {"X_test": a.get("X_test"), "y_test": a.get("y_test")}
    common = dict(dtype=dtype, device=device, seed=oc.init_seed, **test)
    try:
        if oc.name == "logreg":
            return LogReg(X, y, l2=1e-3 if oc.l2 is None else oc.l2, **common)
        if oc.name == "mlp":
            return MLP(X, y, l2=oc.l2 or 0.0, hidden=tuple(oc.hidden), **common)
        return CNN(X, y, a["image_shape"], l2=oc.l2 or 0.0, channels=oc.channels, **common)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def worker_rows(cfg: Any, objective: Objective, n: int) -> list[np.ndarray | None]:
    """The rows each worker samples from (None: all rows)."""
    y = objective.y.cpu().numpy() if objective.n_rows else None
    return shards(cfg, y, n)


def shards(cfg: Any, y: np.ndarray | None, n: int) -> list[np.ndarray | None]:
    """Each worker's rows of a dataset with targets ``y`` (None: no data), and a batch that
    fits every shard."""
    ds = cfg.dataset
    if ds.split != "none" and y is None:
        raise ConfigError(
            f"dataset.split={ds.split} needs a dataset; objective {cfg.objective.name} has none"
        )
    if y is not None and y.ndim > 1 and ds.split in ("label_sorted", "dirichlet"):
        raise ConfigError(f"dataset.split={ds.split} needs one label per row; y is {y.shape}")
    rows = split_rows(np.zeros(0) if y is None else y, n, ds.split, ds.alpha, ds.seed)
    bs = cfg.batch_size
    if bs is not None and y is not None:
        smallest = min(len(y) if r is None else len(r) for r in rows)
        if bs > smallest:
            raise ConfigError(
                f"batch_size={bs} is larger than the dataset ({smallest} rows per worker)"
            )
    return rows


def check_first_update(cfg: Any, gradients_per_update: float) -> None:
    """A gradient budget that ends the run before its first update trains nothing."""
    g = cfg.budget.gradients
    if g is not None and gradients_per_update > g:
        name = cfg.optimizer.name
        key = "optimizer.batch" if name == "rennala" else "topology.n_workers"
        raise ConfigError(
            f"budget.gradients={g} ends the run before its first update: {name} needs "
            f"{gradients_per_update:.0f} gradients per update ({key}); raise budget.gradients"
        )


def optimal_m(cfg: Any, constants: dict | None) -> int | None:
    """max(1, ceil(sigma^2 / eps)) for Rennala's S and Ringmaster's R (not the m* of the
    theory's T_opt bound, docs/methods.md section 5), where sigma^2 is
    known (the optimizer's ``sigma2``, else the objective's exact value) and a target eps is
    set; None otherwise (the rule then uses n)."""
    if cfg.target is None:
        return None
    sigma2 = cfg.optimizer.sigma2
    if sigma2 is None:
        sigma2 = (constants or {}).get("sigma2")
    return optimal_batch(sigma2, cfg.target) if sigma2 else None


def rule_options(cfg: Any, constants: dict | None) -> dict:
    """The method's own config keys, with S and R resolved."""
    opt = cfg.optimizer
    options = {k: opt[k] for k in opt if k not in ("name", "lr", "sigma2")}
    for key in ("batch", "threshold"):
        if opt.name in ("rennala", "ringmaster") and options.get(key, 0) is None:
            options[key] = optimal_m(cfg, constants)
    return options


#: what a worker process of engine=rpc calls to build its part, as "module:function": the worker
#: imports it by name, so the engines never import this package
WORKER_BUILDER = "pipeline.compose.build:build_worker"


def build_worker(cfg: Any, w: int) -> tuple[Objective, Any, torch.device]:
    """Only what worker ``w`` of a real run needs: the objective on the worker's device, its
    shard's sampler (the same stream as the event engine's worker ``w``) and the device."""
    device = resolve_device(cfg.engine.device, "engine.device", worker=w)
    objective = build_objective(cfg, dataset_path(cfg), device=device)
    rows = worker_rows(cfg, objective, cfg.topology.n_workers)[w]
    sampler = objective.sampler(rows, cfg.batch_size, stream(cfg.seed, SAMPLES, w), worker=w)
    return objective, sampler, device


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
    constants: dict | None = None  # the theory's L, Delta, sigma^2 where exact
    worker_builder: str = WORKER_BUILDER  # engine=rpc: what each worker process calls

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
            self.objective.sampler(rows, bs, stream(self.cfg.seed, SAMPLES, w), worker=w)
            for w, rows in enumerate(self.rows)
        ]


def build_times(cfg: Any) -> JobTimes:
    t = cfg.topology
    try:
        if t.name == "trace":
            from pipeline.core.trace import TraceTimes

            return TraceTimes.load(t.trace_path, t.n_workers)
        if t.name == "native":
            return JobTimes(np.ones(t.n_workers), "none", cfg.seed)
        taus = topology_taus(cfg)
        return JobTimes(taus, t.noise, cfg.seed, gamma_shape=t.gamma_shape, jitter=t.jitter)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def topology_taus(cfg: Any) -> np.ndarray:
    """The mean job time of every worker of an emulated topology."""
    t = cfg.topology
    return mean_times(
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


def check_first_arrival(cfg: Any, taus: np.ndarray) -> None:
    """With fixed job times (noise none) on the simulated clock, a time budget shorter than the
    first update trains nothing: the fastest worker's time, or for minibatch SGD the slowest's."""
    if cfg.budget.time is None or cfg.topology.get("noise") != "none" or not len(taus):
        return
    if cfg.engine.name == "rpc" and not cfg.engine.ordered:
        return  # budget.time is wall seconds there
    sync = cfg.optimizer.name == "minibatch"
    first = float(np.max(taus) if sync else np.min(taus))
    if cfg.budget.time < first:
        who = "a minibatch round (the slowest worker)" if sync else "the fastest worker's job"
        raise ConfigError(
            f"budget.time={cfg.budget.time:g} ends the run before its first update: "
            f"{who} takes {first:g} (topology.noise=none)"
        )


def build_experiment(cfg: Any) -> Experiment:
    validate(cfg)
    lr = resolve_lr(cfg)
    times = build_times(cfg)
    n = times.n_workers
    path = dataset_path(cfg)
    objective = build_objective(cfg, path)
    f_star, constants = exact_constants(objective, path, cfg.batch_size)
    if is_plugin(cfg.optimizer):
        taus = None if cfg.topology.name in ("native", "trace") else times.taus
        rule = build_plugin(cfg.optimizer, n, lr, stream(cfg.seed, RULE), taus)
    else:
        try:
            rule = build_rule(cfg.optimizer.name, n, lr, rule_options(cfg, constants), cfg.seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    check_first_update(cfg, 1.0 / rule.updates_per_gradient)
    check_first_arrival(cfg, times.taus)
    rows = worker_rows(cfg, objective, n)
    evaluator = Evaluator(objective, f_star)
    eval_every = cfg.eval_every or auto_eval_every(cfg, rule, times)
    return Experiment(cfg, objective, rule, times, rows, evaluator, path, lr, eval_every, constants)


def check_job(cfg: Any, cache: dict | None = None) -> None:
    """Everything that can be checked about one composed job before it runs, in the order that
    never does heavy work for a job that cannot run: the config; the trace and the data file's
    headers; the memory the run needs; then (building a default data file if needed) the data
    itself, the workers' shards and the first update. ``cache`` spares a sweep re-reading a
    data file its jobs share."""
    cache = {} if cache is None else cache
    validate(cfg)
    if cfg.objective.name == "logreg" and cfg.objective.l2 is not None and not cfg.objective.l2:
        raise ConfigError("logreg needs objective.l2 > 0 (the objective must be strongly convex)")
    resolve_device(cfg.objective.device)
    eng = cfg.engine
    if eng.name == "rpc" and eng.launcher == "spawn" and eng.device != "auto":
        resolve_device(eng.device, "engine.device")  # the workers start on this machine
    n = cfg.topology.n_workers
    if cfg.topology.name == "trace":
        n = build_times(cfg).n_workers
    needs_data = cfg.objective.name not in SYNTHETIC_OBJECTIVES
    if needs_data and cfg.dataset.name == "callable":
        dataset_path(cfg)  # the user's factory writes its data file (once), read like any other
    existing = existing_data(cfg) if needs_data else None
    shape = None
    if existing is not None:
        shape = inspect_npz(existing, data_key(cfg))
    elif needs_data and cfg.dataset.name != "none":
        check_builder_params(cfg.dataset.name, dict(cfg.dataset.params or {}))
    resources.check(cfg, n, shape)
    path = dataset_path(cfg)
    y = None
    if needs_data:
        if path is None:
            raise ConfigError(
                f"objective {cfg.objective.name!r} needs data; dataset=none gives none"
            )
        loss = cfg.objective.get("loss")
        key = (str(path), cfg.objective.name, str(loss))
        if key not in cache:
            cache[key] = load_data(path, cfg.objective.name, data_key(cfg), loss)["y"]
        y = cache[key]
    shards(cfg, y, n)
    if cfg.topology.name not in ("trace", "native") and cfg.budget.time is not None:
        try:
            check_first_arrival(cfg, topology_taus(cfg))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    name = cfg.optimizer.name
    if is_plugin(cfg.optimizer):  # the rule's own checks of its values (cheap: no data)
        taus = None if cfg.topology.name in ("native", "trace") else topology_taus(cfg)
        rule = build_plugin(cfg.optimizer, n, resolve_lr(cfg), stream(cfg.seed, RULE), taus)
        check_first_update(cfg, 1.0 / rule.updates_per_gradient)
    elif name == "minibatch":
        check_first_update(cfg, n)
    elif name == "rennala" and not is_plugin(cfg.optimizer) and cfg.optimizer.batch is not None:
        check_first_update(cfg, cfg.optimizer.batch)


def auto_eval_every(cfg: Any, rule: ServerRule, times: JobTimes, points: int = 200) -> int:
    """About ``points`` evaluations over the run's expected number of updates."""
    if cfg.budget.gradients is not None:
        grads = cfg.budget.gradients
    else:
        grads = cfg.budget.time * float(np.sum(1.0 / times.taus))
    return max(1, int(grads * rule.updates_per_gradient / points))
