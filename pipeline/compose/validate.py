"""Checks of a composed config that need no data, each ending in a one-line ConfigError: keys
outside the schemas (with the closest valid key), every numeric field against the range in its
schema's metadata, names and choices, consistency between groups, and the stepsize."""

from __future__ import annotations

import difflib
import math
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import CONF_DIR, ConfigError
from pipeline.compose import userdata, usermodel
from pipeline.compose.schema import GROUPS, SCHEMAS, TOPOLOGY_ENGINES, Config

#: the arguments of a user's module, loss and data factory (any keys, added with +key=...)
USER_ARGS = ("objective.module.", "objective.loss.", "dataset.factory.")


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


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
    if head == "optimizer" and cfg is not None and "_target_" in cfg.get("optimizer", {}):
        from pipeline.compose.plugins import missing_key_message

        return missing_key_message(key, cfg.optimizer)
    if key.startswith(USER_ARGS):  # a user's module, loss or data factory: keys of their own
        return f"{key} is not set yet; add an argument with +{key}=..."
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
    from pipeline.compose.plugins import check_plugin, is_plugin
    from pipeline.core.methods import METHODS
    from pipeline.core.splits import SPLITS
    from pipeline.core.topology import MODELS, NOISES
    from pipeline.engines import ENGINES

    opt, top, bud, eng = cfg.optimizer, cfg.topology, cfg.budget, cfg.engine
    plugin = is_plugin(opt)
    if plugin:
        check_plugin(opt)  # its keys against its class's signature
    for group, names in (
        ("optimizer", METHODS), ("topology", MODELS), ("engine", ENGINES),
        ("objective", OBJECTIVES),
    ):  # fmt: skip
        if group == "optimizer" and plugin:
            continue
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
    if cfg.objective.name == "torch_module":
        usermodel.check(cfg.objective)
    userdata.check(cfg.dataset)
    if cfg.objective.name == "mlp":
        hidden = list(cfg.objective.hidden)
        _need(
            all(isinstance(h, int) and h >= 1 for h in hidden),
            f"objective.hidden must be a list of positive layer widths, got {hidden}",
        )
    if opt.name == "asgd_random" and not plugin:
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
    # a name that is no method here may be a rule on a search path; a near miss is a typo
    known = sorted(set(METHODS) | ({opt.name} if plugin else set()) | plugin_names())
    for name in sorted(set(cfg.lr_table or {}) - set(known)):
        guess = _closest(name, known)
        _need(guess is None, f"lr_table.{name} is not a method; did you mean lr_table.{guess}?")
    for method, value in (cfg.lr_table or {}).items():
        _need(
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            f"lr_table.{method} must be a positive finite number, got {value}",
        )
    lr = resolve_lr(cfg)
    _need(math.isfinite(lr) and lr > 0, f"the stepsize must be positive and finite, got {lr}")


def plugin_names() -> set[str]:
    """The names of the rules that the project's conf/optimizer/ gives by ``_target_`` (the
    literature methods): an experiment's lr_table may hold them whichever method runs."""
    names = set()
    for path in (CONF_DIR / "optimizer").glob("*.yaml"):
        head = OmegaConf.load(path)
        if "_target_" in head and isinstance(head.get("name"), str):
            names.add(head.name)
    return names


def resolve_lr(cfg: Any) -> float:
    """optimizer.lr when set, else the experiment's tuned value for this method."""
    if cfg.optimizer.get("lr") is not None:
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
