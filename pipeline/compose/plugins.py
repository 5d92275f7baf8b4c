"""Rules from the user's own package: an optimizer config with ``_target_`` (docs/extending.md).

``conf/optimizer/<name>.yaml`` in any config directory on ``hydra.searchpath``::

    _target_: their_pkg.TheirRule   # a pipeline.api.ServerRule subclass
    name: their_rule                # the method's name in records, lr_table and the report
    lr: 0.05                        # optional: else lr_table[name] * lr_scale
    threshold: 3                    # the rule's own keys

is built as ``TheirRule(n_workers=n, lr=lr, threshold=3)``. Its keys are checked against the
class's signature before any work starts (an unknown key is one line with the closest valid
one, a missing required one is named), and two parameters are filled by the pipeline when the
signature asks for them (:data:`INJECTED`): ``rng``, the rule's own seeded stream, and
``worker_times``, each worker's mean job time tau_i (None where the topology has none).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from typing import Any

from pipeline import ConfigError
from pipeline.core.methods import METHODS, ServerRule

#: the keys of a ``_target_`` optimizer config that are not the rule's own
RESERVED = ("_target_", "name", "lr")
#: parameters the pipeline fills when the rule's signature has them
INJECTED = ("rng", "worker_times")
#: the two every rule takes
POSITIONAL = ("n_workers", "lr")


def is_plugin(opt: Any) -> bool:
    """The optimizer config names its rule by ``_target_``."""
    return "_target_" in opt


def rule_class(target: Any) -> type[ServerRule]:
    """Import ``target`` ("package.module.Class"); one line for anything that is not a rule."""
    where = f"optimizer._target_={target}"
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{where}: give the rule's class as package.module.Class")
    module, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}: cannot import {module} ({e})") from None
    except AttributeError:
        raise ConfigError(f"{where}: module {module} has no {attr!r}") from None
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(f"{where}: importing {module} failed: {type(e).__name__}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, ServerRule)):
        raise ConfigError(f"{where}: not a subclass of pipeline.api.ServerRule")
    if inspect.isabstract(cls):
        raise ConfigError(f"{where}: abstract (it must define on_gradient)")
    return cls


def own_keys(opt: Any) -> dict[str, Any]:
    """The rule's own keys of the optimizer config, as plain Python values."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(opt, resolve=True)
    return {k: v for k, v in plain.items() if k not in RESERVED}


def check_plugin(opt: Any) -> type[ServerRule]:
    """Everything about a ``_target_`` optimizer config that needs no data."""
    cls = rule_class(opt.get("_target_"))
    name = opt.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"optimizer._target_={opt._target_} needs a name: add `name: <method name>` to its "
            "config (records, lr_table and the report use it)"
        )
    if name in METHODS:
        raise ConfigError(
            f"optimizer.name={name} is a built-in method; name the rule of {opt._target_} "
            "another way"
        )
    lr = opt.get("lr")
    if lr is not None and (
        isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
        or not lr > 0
    ):  # fmt: skip
        raise ConfigError(f"optimizer.lr must be a positive finite number, got {lr!r}")
    params = inspect.signature(cls.__init__).parameters
    missing = [p for p in POSITIONAL if p not in params]
    if missing:
        raise ConfigError(
            f"optimizer._target_={opt._target_}: __init__ must take {', '.join(POSITIONAL)} "
            f"(it lacks {', '.join(missing)})"
        )
    own, takes_any = rule_keys(cls)
    keys = own_keys(opt)
    for key in keys:
        if key in INJECTED:
            raise ConfigError(f"optimizer.{key} is filled by the pipeline; remove it")
        if key not in own and not takes_any:
            guess = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
            hint = f"did you mean optimizer.{guess[0]}? " if guess else ""
            raise ConfigError(
                f"unknown key optimizer.{key}; {hint}({opt._target_} takes: "
                f"{', '.join(own) or 'no keys'})"
            )
    for n in own:
        if params[n].default is inspect.Parameter.empty and n not in keys:
            raise ConfigError(f"optimizer.{n} must be set ({opt._target_} has no default for it)")
    return cls


def rule_keys(cls: type[ServerRule]) -> tuple[list[str], bool]:
    """The keys a rule class takes from its config, and whether it takes any (``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    own = [
        n for n, p in params.items()
        if n not in ("self", *POSITIONAL, *INJECTED)
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]  # fmt: skip
    return own, any(p.kind is p.VAR_KEYWORD for p in params.values())


def missing_key_message(key: str, opt: Any) -> str:
    """A command-line override of a key the rule's YAML does not hold: one line."""
    leaf = key.rpartition(".")[2]
    try:
        own, takes_any = rule_keys(rule_class(opt.get("_target_")))
    except ConfigError as e:
        return str(e)
    if leaf == "lr" or leaf in own or takes_any:
        return (
            f"{key} is not in the config of optimizer={opt.get('name')}: add it there, or give "
            f"it as +{key}=..."
        )
    guess = difflib.get_close_matches(leaf, own, n=1, cutoff=0.6)
    hint = f"did you mean optimizer.{guess[0]}? " if guess else ""
    return f"unknown key {key}; {hint}({opt._target_} takes: {', '.join(own) or 'no keys'})"


def build_plugin(opt: Any, n_workers: int, lr: float, rng: Any, worker_times: Any) -> ServerRule:
    """``TheirRule(n_workers=n, lr=lr, **keys)`` with the injected parameters it asks for; a
    constructor that refuses its values is one line."""
    cls = check_plugin(opt)
    params = inspect.signature(cls.__init__).parameters
    kwargs = own_keys(opt)
    if "rng" in params:
        kwargs["rng"] = rng
    if "worker_times" in params:
        kwargs["worker_times"] = None if worker_times is None else list(map(float, worker_times))
    try:
        rule = cls(n_workers=n_workers, lr=lr, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer._target_={opt._target_}: {e}") from None
    if not isinstance(rule.name, str) or rule.name != opt.name:
        rule.name = opt.name  # the config's name is the method's name everywhere
    return rule
