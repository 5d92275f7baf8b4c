"""Typed configuration schemas, registered in Hydra's ConfigStore; the YAML files in ``conf/``
fill them, and :mod:`pipeline.compose.validate` checks a composed config against them.

Every option of a config group has its own schema extending the group's base (Hydra's "config
groups with structured configs" pattern): ``conf/optimizer/rennala.yaml`` starts from
``schema_rennala`` (:class:`RennalaConfig`), so a key that the chosen method, topology, objective
or engine does not have is an error at compose time, never a silently ignored value.

Numeric fields carry their valid range in the dataclass field's metadata (:func:`num`);
:func:`pipeline.compose.validate.validate` checks every one of them generically (finite, range),
then what types cannot (names, consistency between groups), and refuses any key outside the
schemas, however it was added.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pipeline import EXPERIMENT

#: seeds are 32-bit: scikit-learn's and numpy's legacy generators take no more
SEED_MAX = 2**32 - 1


def num(default: Any = None, *, low: float | None = None, high: float | None = None,
        gt: float | None = None, lt: float | None = None,
        nullable: bool | None = None) -> Any:  # fmt: skip
    """A numeric field with its valid range: ``low <= v <= high``, ``gt < v < lt``; always
    finite. ``None`` is valid where the default is ``None`` (or ``nullable``)."""
    nullable = default is None if nullable is None else nullable
    return field(default=default, metadata={"range": (low, high, gt, lt), "nullable": nullable})


# ---------------------------------------------------------------------------------- objective
@dataclass
class ObjectiveConfig:
    name: str = MISSING
    dtype: str = "float64"  # float32 | float64
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (where the event engine computes)


@dataclass
class QuadraticConfig(ObjectiveConfig):
    name: str = "quadratic"


@dataclass
class NoisyQuadraticConfig(ObjectiveConfig):
    name: str = "noisy_quadratic"
    dim: int = num(10, low=1, high=10**8)
    sigma: float = num(1.0, low=0)
    cond: float = num(10.0, low=1)


@dataclass
class ModelConfig(ObjectiveConfig):
    l2: float | None = num(None, low=0)  # None: 1e-3 for logreg, 0 for the others
    init_seed: int = num(0, low=0, high=SEED_MAX)  # the model's initial weights


@dataclass
class LogRegConfig(ModelConfig):
    name: str = "logreg"


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    dtype: str = "float32"
    hidden: list[int] = field(default_factory=lambda: [64, 64])


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    dtype: str = "float32"
    channels: int = num(32, low=1, high=4096)


@dataclass
class TorchModuleConfig(ModelConfig):
    """A user's torch.nn.Module: ``module`` is ``{_target_: pkg.Class, **arguments}``."""

    name: str = "torch_module"
    dtype: str = "float32"
    module: dict[str, Any] = field(default_factory=dict)
    loss: Any = "cross_entropy"  # cross_entropy | mse | {_target_: pkg.loss, **arguments}


# ------------------------------------------------------------------------------------ dataset
@dataclass
class DatasetConfig:
    name: str = "lstsq_paper"
    path: str | None = None  # None: data/<name>.npz, built by the data step when missing
    seed: int = num(0, low=0, high=SEED_MAX)  # the data's own seed, independent of the run's
    split: str = "none"  # none (every worker sees all rows) | iid | label_sorted | dirichlet
    alpha: float = num(1.0, gt=0)  # dirichlet concentration
    params: dict[str, Any] = field(default_factory=dict)  # builder arguments (n_rows, dim, ...)
    factory: dict[str, Any] = field(default_factory=dict)  # dataset=callable: {_target_: ...}


# ----------------------------------------------------------------------------------- topology
@dataclass
class TopologyConfig:
    name: str = MISSING
    n_workers: int | None = num(40, low=1, high=10**7, nullable=False)


@dataclass
class TimedTopologyConfig(TopologyConfig):
    """Emulated job times: a mean time per worker and per-job noise on top."""

    noise: str = "none"  # none | exponential | gamma | halfnormal
    gamma_shape: float = num(2.0, gt=0)
    jitter: float = num(0.5, low=0)  # halfnormal: s_i = jitter * tau_i


@dataclass
class HomogeneousTopologyConfig(TimedTopologyConfig):
    name: str = "homogeneous"
    tau: float = num(1.0, gt=0)


@dataclass
class LinearTopologyConfig(HomogeneousTopologyConfig):
    name: str = "linear"


@dataclass
class SqrtTopologyConfig(HomogeneousTopologyConfig):
    name: str = "sqrt"


@dataclass
class StragglerTopologyConfig(HomogeneousTopologyConfig):
    name: str = "straggler"
    stragglers: int = num(1, low=0)
    factor: float = num(100.0, gt=0)


@dataclass
class TwoClassTopologyConfig(TimedTopologyConfig):
    name: str = "two_class"
    fraction_fast: float = num(0.5, low=0, high=1)
    tau_fast: float = num(1.0, gt=0)
    tau_slow: float = num(10.0, gt=0)


@dataclass
class CustomTopologyConfig(TimedTopologyConfig):
    name: str = "custom"
    times: list[float] = MISSING  # one mean time per worker


@dataclass
class NativeTopologyConfig(TopologyConfig):
    """engine=rpc only: no emulated wait, the hardware's own speed."""

    name: str = "native"


@dataclass
class TraceTopologyConfig(TopologyConfig):
    """engine=sim only: replay the per-job durations measured in a real (rpc) run."""

    name: str = "trace"
    n_workers: int | None = num(None, low=1, high=10**7, nullable=True)  # None: the trace's
    trace_path: str = MISSING  # a real run's directory (or its events.csv / jobs.csv)


# ---------------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float | None = num(None, gt=0)  # None: the experiment's lr_table entry for this method


@dataclass
class MinibatchConfig(OptimizerConfig):
    name: str = "minibatch"


@dataclass
class AsgdConfig(OptimizerConfig):
    name: str = "asgd"


@dataclass
class AsgdAdaptiveConfig(OptimizerConfig):
    name: str = "asgd_adaptive"


@dataclass
class AsgdDropConfig(OptimizerConfig):
    name: str = "asgd_drop"
    threshold: int | None = num(None, low=0)  # None: n_workers


@dataclass
class AsgdRandomConfig(OptimizerConfig):
    name: str = "asgd_random"
    stepsize: str = "constant"  # constant | adaptive | drop
    threshold: int | None = num(None, low=0)  # drop threshold; None: n_workers


@dataclass
class OptimalConfig(OptimizerConfig):
    """Rennala's S and Ringmaster's R default to max(1, ceil(sigma^2 / eps)) where sigma^2
    is known (or given) and a target eps is set, else to n_workers."""

    cancel: bool = False  # cancel stale running jobs instead of letting them finish
    sigma2: float | None = num(None, gt=0)  # overrides the objective's variance for S and R


@dataclass
class RennalaConfig(OptimalConfig):
    name: str = "rennala"
    batch: int | None = num(None, low=1)  # S


@dataclass
class RingmasterConfig(OptimalConfig):
    name: str = "ringmaster"
    threshold: int | None = num(None, low=1)  # R


# ------------------------------------------------------------------------------------- engine
@dataclass
class EngineConfig:
    name: str = MISSING


@dataclass
class SimEngineConfig(EngineConfig):
    name: str = "sim"
    # seconds between checkpoints (checkpoint.pt, for resume=<run dir>); null: none
    checkpoint_every: float | None = num(60.0, gt=0, high=86400, nullable=True)


@dataclass
class RpcEngineConfig(EngineConfig):
    name: str = "rpc"
    time_scale: float = num(0.01, low=0, high=3600)  # wall seconds per unit of worker time
    ordered: bool = False  # apply arrivals in the order of the simulated clock
    device: str = "cpu"  # cpu | cuda | auto: where workers compute (worker i on cuda:i mod k)
    launcher: str = "spawn"  # spawn (one machine) | torchrun (ranks from the environment)
    job_timeout: float = num(60.0, gt=0, high=86400)  # seconds a job may take beyond its wait
    start_timeout: float = num(300.0, gt=0, high=86400)  # start-up and rendezvous
    shutdown_timeout: float = num(10.0, gt=0, high=3600)
    on_worker_failure: str = "continue"  # continue | abort (synchronous methods)
    master_addr: str = "127.0.0.1"
    master_port: int | None = num(None, low=1, high=65535)  # None: a free port (spawn)
    # seconds between checkpoints (checkpoint.pt, for resume=<run dir>); null: none
    checkpoint_every: float | None = num(60.0, gt=0, high=86400, nullable=True)
    worker_threads: int = num(1, low=1, high=1024)  # torch threads per worker process


# ----------------------------------------------------------------------------------- the rest
@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db
    experiment: str = EXPERIMENT
    artifacts: bool = True
    sweep_name: str | None = None  # name of a multirun's parent run (default: sweep <dir>)


@dataclass
class BudgetConfig:
    gradients: int | None = num(None, low=1, high=10**12)
    time: float | None = num(None, gt=0)


@dataclass
class Config:
    objective: ObjectiveConfig = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    topology: TopologyConfig = MISSING
    # a built-in's schema (conf/optimizer/<name>.yaml), or a rule given by ``_target_``
    # (pipeline/compose/plugins.py: its keys are checked against the class's signature)
    optimizer: Any = MISSING
    engine: EngineConfig = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    batch_size: int | None = num(256, low=1, nullable=True)  # None: full-batch gradients
    eval_every: int | None = num(None, low=1)  # updates; None: about 200 evaluations per run
    seed: int = num(0, low=0, high=SEED_MAX)
    target: float | None = num(None, gt=0)  # F - F* (or loss) target: time to target, theory eps
    lr_table: dict[str, float] = field(default_factory=dict)  # method -> tuned stepsize
    lr_scale: float = num(1.0, gt=0)  # multiplies the lr_table entry (a tuning grid sweeps this)
    progress: str = "auto"  # auto | on | off
    threads: int = num(1, low=1, high=1024)  # torch intra-op threads in this process


# option name -> schema, per group (the YAML file conf/<group>/<option>.yaml extends it)
SCHEMAS: dict[str, dict[str, type]] = {
    "objective": {
        "quadratic": QuadraticConfig,
        "noisy_quadratic": NoisyQuadraticConfig,
        "logreg": LogRegConfig,
        "mlp": MLPConfig,
        "cnn": CNNConfig,
        "torch_module": TorchModuleConfig,
    },
    "topology": {
        "homogeneous": HomogeneousTopologyConfig,
        "linear": LinearTopologyConfig,
        "sqrt": SqrtTopologyConfig,
        "straggler": StragglerTopologyConfig,
        "two_class": TwoClassTopologyConfig,
        "custom": CustomTopologyConfig,
        "native": NativeTopologyConfig,
        "trace": TraceTopologyConfig,
    },
    "optimizer": {
        "minibatch": MinibatchConfig,
        "asgd": AsgdConfig,
        "asgd_adaptive": AsgdAdaptiveConfig,
        "asgd_drop": AsgdDropConfig,
        "asgd_random": AsgdRandomConfig,
        "rennala": RennalaConfig,
        "ringmaster": RingmasterConfig,
    },
    "engine": {"sim": SimEngineConfig, "rpc": RpcEngineConfig},
}
GROUPS = ("objective", "dataset", "topology", "optimizer", "engine", "tracking", "experiment")
#: topologies that only some engines can carry out
TOPOLOGY_ENGINES = {"native": ("rpc",), "trace": ("sim",)}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=group, name=f"schema_{option}", node=schema)
    if not OmegaConf.has_resolver("pid"):
        OmegaConf.register_new_resolver("pid", lambda: os.getpid(), use_cache=True)


register()
