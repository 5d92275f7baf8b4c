"""Typed configuration schemas, registered in Hydra's ConfigStore; the YAML files in ``conf/``
fill them.

Every option of a config group has its own schema extending the group's base (Hydra's "config
groups with structured configs" pattern): ``conf/optimizer/rennala.yaml`` starts from
``schema_rennala`` (:class:`RennalaConfig`), so a key that the chosen method, topology, objective
or engine does not have is an error at compose time, never a silently ignored value.

Numeric fields carry their valid range in the dataclass field's metadata (:func:`num`);
:func:`validate` checks every one of them generically (finite, range), then what types cannot
(names, consistency between groups) and :func:`check_keys` refuses any key outside the schemas,
however it was added.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pipeline import EXPERIMENT, ConfigError

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
    l2: float | None = num(None, low=0)  # None: 1e-3 for logreg, 0 for mlp and cnn
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


# ------------------------------------------------------------------------------------ dataset
@dataclass
class DatasetConfig:
    name: str = "lstsq_paper"
    path: str | None = None  # None: data/<name>.npz, built by the data step when missing
    seed: int = num(0, low=0, high=SEED_MAX)  # the data's own seed, independent of the run's
    split: str = "none"  # none (every worker sees all rows) | iid | label_sorted | dirichlet
    alpha: float = num(1.0, gt=0)  # dirichlet concentration
    params: dict[str, Any] = field(default_factory=dict)  # builder arguments (n_rows, dim, ...)


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
    """Rennala's S and Ringmaster's R default to m* = max(1, ceil(sigma^2 / eps)) where sigma^2
    is known (or given) and a target eps is set, else to n_workers."""

    cancel: bool = False  # cancel stale running jobs instead of letting them finish
    sigma2: float | None = num(None, gt=0)  # overrides the objective's variance for m*


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


@dataclass
class RpcEngineConfig(EngineConfig):
    name: str = "rpc"
    time_scale: float = num(0.01, low=0, high=3600)  # wall seconds per unit of worker time
    ordered: bool = False  # apply arrivals in the order of the simulated clock
    device: str = "cpu"  # cpu | cuda | auto: where workers compute (worker i on cuda:i mod k)
    launcher: str = "spawn"  # spawn (one machine) | torchrun (ranks from the environment)
    job_timeout: float = num(60.0, gt=0, high=86400)  # seconds a job may take beyond its wait
    start_timeout: float = num(120.0, gt=0, high=86400)  # start-up and rendezvous
    shutdown_timeout: float = num(10.0, gt=0, high=3600)
    on_worker_failure: str = "continue"  # continue | abort (synchronous methods)
    master_addr: str = "127.0.0.1"
    master_port: int | None = num(None, low=1, high=65535)  # None: a free port (spawn)
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
    optimizer: OptimizerConfig = MISSING
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


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def schema_of(cfg: Any, group: str) -> type | None:
    node = cfg.get(group) if isinstance(cfg, DictConfig) else getattr(cfg, group, None)
    if node is None:
        return None
    return SCHEMAS.get(group, {}).get(node.get("name"))


def _schema_fields(schema: type) -> dict[str, Any]:
    return {f.name: f for f in fields(schema)}


def _closest(word: str, candidates: list[str]) -> str | None:
    best = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return best[0] if best else None


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a composed config (dict-valued fields included, not expanded)."""
    out = []
    for k in cfg:
        key = f"{prefix}{k}"
        out.append(key)
        v = cfg._get_node(k)
        if isinstance(v, DictConfig) and is_dataclass(OmegaConf.get_type(v)):
            out += all_keys(v, key + ".")
    return out


def unknown_key_message(key: str, cfg: Any) -> str:
    """'unknown key X; did you mean Y?', naming the group option's own keys where it helps."""
    head, _, leaf = key.rpartition(".")
    if head in SCHEMAS and cfg is not None and head in cfg:
        option = cfg[head].get("name")
        own = sorted(_schema_fields(SCHEMAS[head][option])) if option in SCHEMAS[head] else []
        guess = _closest(leaf, own)
        if guess:
            return f"unknown key {key}; did you mean {head}.{guess}?"
        if (head, option, leaf) == ("optimizer", "asgd", "stepsize"):
            return (
                "optimizer=asgd has no key 'stepsize': choose optimizer=asgd_adaptive or "
                "optimizer=asgd_drop for the adaptive or drop rule"
            )
        others = sorted(o for o, s in SCHEMAS[head].items() if leaf in _schema_fields(s))
        where = f" (it belongs to {head}={', '.join(others)})" if others else ""
        return f"{head}={option} has no key {leaf!r}{where}; its keys: {', '.join(own)}"
    candidates = list(GROUPS) + (all_keys(cfg) if cfg is not None else [])
    guess = _closest(key, candidates)
    return f"unknown key {key}" + (f"; did you mean {guess}?" if guess else "")


def check_keys(cfg: Any, node: Any = None, prefix: str = "") -> None:
    """No key outside the schemas, however it got in (``+key=...`` included)."""
    node = cfg if node is None else node
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return
    own = _schema_fields(schema)
    for k in node:
        key = f"{prefix}{k}"
        if k not in own:
            raise ConfigError(unknown_key_message(key, cfg))
        child = node._get_node(k)
        if isinstance(child, DictConfig):
            check_keys(cfg, child, key + ".")


def _check_numbers(node: Any, prefix: str) -> None:
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        child = node._get_node(f.name) if f.name in node else None
        if isinstance(child, DictConfig):
            _check_numbers(child, key + ".")
            continue
        if "range" not in f.metadata or child is None:
            continue
        v = node[f.name]
        if v is None:
            _need(f.metadata["nullable"], f"{key} must be a number, got null")
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key} must be a number, got {v!r}")
        _need(math.isfinite(v), f"{key} must be finite, got {v}")
        low, high, gt, lt = f.metadata["range"]
        if low is not None:
            _need(v >= low, f"{key} must be >= {low:g}, got {v}")
        if gt is not None:
            _need(v > gt, f"{key} must be > {gt:g}, got {v}")
        if high is not None:
            _need(v <= high, f"{key} must be <= {high:g}, got {v}")
        if lt is not None:
            _need(v < lt, f"{key} must be < {lt:g}, got {v}")


def _one_of(value: Any, choices: tuple | list, key: str) -> None:
    _need(value in choices, f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")


def validate(cfg: Any) -> None:
    """Checks that need no data; raise ConfigError with a one-line message."""
    from models.objectives import OBJECTIVES
    from pipeline.core.methods import METHODS
    from pipeline.core.splits import SPLITS
    from pipeline.core.topology import MODELS, NOISES
    from pipeline.engines import ENGINES

    opt, top, bud, eng = cfg.optimizer, cfg.topology, cfg.budget, cfg.engine
    for group, names in (
        ("optimizer", METHODS), ("topology", MODELS), ("engine", ENGINES),
        ("objective", OBJECTIVES),
    ):  # fmt: skip
        name = cfg[group].name
        _need(
            name in names and name in SCHEMAS[group],
            f"unknown {group} {group}.name={name!r}; choose one of {', '.join(SCHEMAS[group])}",
        )
        _need(
            OmegaConf.get_type(cfg[group]) is SCHEMAS[group][name],
            f"{group}.name={name!r} does not match the chosen option; "
            f"choose the option instead: {group}={name}",
        )
    check_keys(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    _need(
        not missing, f"{', '.join(missing)} must be set (e.g. {missing[0] if missing else ''}=...)"
    )
    _check_numbers(cfg, "")
    _one_of(cfg.objective.dtype, ("float32", "float64"), "objective.dtype")
    _one_of(cfg.dataset.split, SPLITS, "dataset.split")
    if "noise" in top:
        _one_of(top.noise, NOISES, "topology.noise")
    if top.name == "custom":
        _need(
            len(top.times) == top.n_workers,
            f"topology.times has {len(top.times)} entries "
            f"but topology.n_workers is {top.n_workers}",
        )
        _need(
            all(math.isfinite(t) and t > 0 for t in top.times),
            "topology.times must all be positive and finite",
        )
    if top.name == "straggler":
        _need(
            top.stragglers <= top.n_workers,
            f"topology.stragglers must be <= topology.n_workers={top.n_workers}, "
            f"got {top.stragglers}",
        )
    allowed = TOPOLOGY_ENGINES.get(top.name)
    if allowed:
        _need(
            eng.name in allowed,
            f"topology={top.name} needs engine={' or engine='.join(allowed)} "
            f"(this run has engine={eng.name})",
        )
    if cfg.objective.name == "mlp":
        hidden = list(cfg.objective.hidden)
        _need(
            all(isinstance(h, int) and h >= 1 for h in hidden),
            f"objective.hidden must be a list of positive layer widths, got {hidden}",
        )
    if opt.name == "asgd_random":
        _one_of(opt.stepsize, ("constant", "adaptive", "drop"), "optimizer.stepsize")
    if eng.name == "rpc":
        _one_of(eng.device.split(":")[0], ("cpu", "cuda", "auto"), "engine.device")
        _one_of(eng.launcher, ("spawn", "torchrun"), "engine.launcher")
        _one_of(eng.on_worker_failure, ("continue", "abort"), "engine.on_worker_failure")
    _need(
        bud.gradients is not None or bud.time is not None,
        "set a budget: budget.gradients or budget.time",
    )
    _one_of(cfg.progress, ("auto", "on", "off"), "progress")
    unknown = sorted(set(cfg.lr_table or {}) - set(METHODS))
    _need(
        not unknown,
        f"lr_table has unknown methods {unknown}; methods are {', '.join(METHODS)}",
    )
    for method, value in (cfg.lr_table or {}).items():
        _need(
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            f"lr_table.{method} must be a positive finite number, got {value}",
        )
    lr = resolve_lr(cfg)
    _need(math.isfinite(lr) and lr > 0, f"the stepsize must be positive and finite, got {lr}")


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


def numeric_fields() -> list[tuple[str, str | None, str, dict]]:
    """(group, option, key, metadata) of every numeric field of every schema, for tests."""
    out = []
    seen: set = set()

    def walk(schema: type, group: str, option: str | None, prefix: str) -> None:
        for f in fields(schema):
            if "range" in f.metadata:
                key = f"{prefix}{f.name}"
                if (option, key) not in seen:
                    seen.add((option, key))
                    out.append((group, option, key, dict(f.metadata)))
            elif isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
                walk(f.default_factory, f.name, None, f"{prefix}{f.name}.")

    walk(Config, "", None, "")
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            walk(schema, group, option, f"{group}.")
    return out
