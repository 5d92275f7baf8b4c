"""Typed configuration schemas, registered in Hydra's ConfigStore; the YAML files in ``conf/``
fill them. A key that is not in a schema, or a value of the wrong type, is an error at compose
time. :func:`validate` checks what types cannot (ranges, names, consistency)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from pipeline import ConfigError


@dataclass
class ObjectiveConfig:
    name: str = "quadratic"
    dtype: str = "float64"  # float32 | float64
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (the sim engine's device)
    # noisy_quadratic (no data)
    dim: int = 10
    sigma: float = 1.0
    cond: float = 10.0
    # logreg, mlp, cnn
    l2: float | None = None  # None: 1e-3 for logreg, 0 for mlp and cnn
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # mlp
    channels: int = 32  # cnn
    init_seed: int = 0  # the model's initial weights


@dataclass
class DatasetConfig:
    name: str = "lstsq_paper"
    path: str | None = None  # None: data/<name>.npz, built by the data step when missing
    seed: int = 0  # the data's own seed, independent of the run's seed
    split: str = "none"  # none (every worker sees all rows) | iid | label_sorted | dirichlet
    alpha: float = 1.0  # dirichlet concentration
    params: dict[str, Any] = field(default_factory=dict)  # builder arguments (n_rows, dim, ...)


@dataclass
class TopologyConfig:
    name: str = "homogeneous"
    n_workers: int = 40
    tau: float = 1.0
    noise: str = "none"  # none | exponential | gamma | halfnormal
    gamma_shape: float = 2.0
    jitter: float = 0.5  # halfnormal: s_i = jitter * tau_i
    stragglers: int = 1
    factor: float = 100.0
    fraction_fast: float = 0.5
    tau_fast: float = 1.0
    tau_slow: float = 10.0
    times: list[float] | None = None  # custom: one mean time per worker


@dataclass
class OptimizerConfig:
    name: str = "asgd"
    lr: float | None = None  # None: the experiment's lr_table entry for this method
    stepsize: str | None = None  # asgd, asgd_random: constant | adaptive | drop
    threshold: int | None = None  # drop threshold / Ringmaster's R (default n_workers)
    batch: int | None = None  # Rennala's S (default: ceil(sigma2 / target_eps), else n)
    stop_stale: bool = False  # Ringmaster
    target_eps: float | None = None
    sigma2: float | None = None


@dataclass
class EngineConfig:
    name: str = "sim"


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db
    experiment: str = "async-sgd"
    artifacts: bool = True


@dataclass
class BudgetConfig:
    gradients: int | None = None
    time: float | None = None


@dataclass
class Config:
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    batch_size: int | None = 256  # None: full-batch gradients
    eval_every: int | None = None  # updates; None: about 200 evaluations per run
    seed: int = 0
    target: float | None = None  # target F - F* (or loss): time-to-target and theory's eps
    lr_table: dict[str, float] = field(default_factory=dict)  # method -> tuned stepsize
    lr_scale: float = 1.0  # multiplies the lr_table entry (a tuning grid sweeps this)
    progress: str = "auto"  # auto | on | off
    threads: int = 1  # torch intra-op threads in this process (small ops run fastest on 1)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)


register()


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: Any) -> None:
    """Checks that need no data; raise ConfigError with a one-line message."""
    from models.objectives import OBJECTIVES
    from pipeline.engines import ENGINES
    from pipeline.methods import METHODS
    from pipeline.topology import MODELS, NOISES

    opt, top, bud = cfg.optimizer, cfg.topology, cfg.budget
    _need(
        opt.name in METHODS,
        f"unknown method optimizer.name={opt.name!r}; choose one of {', '.join(METHODS)}",
    )
    _need(top.name in MODELS, f"unknown topology {top.name!r}; choose one of {', '.join(MODELS)}")
    _need(
        top.noise in NOISES,
        f"unknown topology.noise={top.noise!r}; choose one of {', '.join(NOISES)}",
    )
    _need(
        cfg.engine.name in ENGINES,
        f"unknown engine {cfg.engine.name!r}; choose one of {', '.join(ENGINES)}",
    )
    _need(
        cfg.objective.name in OBJECTIVES,
        f"unknown objective {cfg.objective.name!r}; choose one of {', '.join(OBJECTIVES)}",
    )
    _need(
        cfg.objective.dtype in ("float32", "float64"),
        f"objective.dtype must be float32 or float64, got {cfg.objective.dtype!r}",
    )
    from pipeline.splits import SPLITS

    ds = cfg.dataset
    _need(
        ds.split in SPLITS, f"unknown dataset.split={ds.split!r}; choose one of {', '.join(SPLITS)}"
    )
    if ds.split == "dirichlet":
        _need(ds.alpha > 0, f"dataset.alpha must be positive for split=dirichlet, got {ds.alpha}")
    _need(top.n_workers >= 1, f"topology.n_workers must be >= 1, got {top.n_workers}")
    _need(top.tau > 0, f"topology.tau must be positive, got {top.tau}")
    if top.name == "custom":
        _need(top.times is not None, "topology=custom needs topology.times=[t_1,...,t_n]")
        _need(
            len(top.times) == top.n_workers,
            f"topology.times has {len(top.times)} entries "
            f"but topology.n_workers is {top.n_workers}",
        )
        _need(all(t > 0 for t in top.times), "topology.times must all be positive")
    lr = resolve_lr(cfg)
    _need(lr > 0, f"optimizer.lr must be positive, got {lr}")
    if opt.stepsize is not None:
        _need(
            opt.stepsize in ("constant", "adaptive", "drop"),
            f"optimizer.stepsize must be constant, adaptive or drop, got {opt.stepsize!r}",
        )
    if opt.threshold is not None:
        _need(opt.threshold >= 1, f"optimizer.threshold must be >= 1, got {opt.threshold}")
    if opt.batch is not None:
        _need(opt.batch >= 1, f"optimizer.batch must be >= 1, got {opt.batch}")
    for name in ("target_eps", "sigma2"):
        v = getattr(opt, name)
        _need(v is None or v > 0, f"optimizer.{name} must be positive, got {v}")
    _need(
        bud.gradients is not None or bud.time is not None,
        "set a budget: budget.gradients or budget.time",
    )
    _need(
        bud.gradients is None or bud.gradients > 0,
        f"budget.gradients must be positive, got {bud.gradients}",
    )
    _need(bud.time is None or bud.time > 0, f"budget.time must be positive, got {bud.time}")
    _need(
        cfg.batch_size is None or cfg.batch_size >= 1,
        f"batch_size must be >= 1 or null, got {cfg.batch_size}",
    )
    _need(
        cfg.eval_every is None or cfg.eval_every >= 1,
        f"eval_every must be >= 1 or null, got {cfg.eval_every}",
    )
    _need(cfg.target is None or cfg.target > 0, f"target must be positive, got {cfg.target}")
    _need(cfg.threads >= 1, f"threads must be >= 1, got {cfg.threads}")
    _need(
        cfg.progress in ("auto", "on", "off"),
        f"progress must be auto, on or off, got {cfg.progress!r}",
    )


def resolve_lr(cfg: Any) -> float:
    """optimizer.lr when set, else the experiment's tuned value for this method."""
    if cfg.optimizer.lr is not None:
        return float(cfg.optimizer.lr)
    table = cfg.lr_table or {}
    if cfg.optimizer.name in table:
        return float(table[cfg.optimizer.name]) * float(cfg.lr_scale)
    raise ConfigError(
        f"no stepsize for method {cfg.optimizer.name!r}: set optimizer.lr "
        f"(the experiment's lr_table has {sorted(table) or 'no entries'})"
    )
