"""``objective=torch_module``: a user's ``torch.nn.Module`` and loss, built from their
``_target_`` configs, every import or constructor error a one-line ConfigError.

``objective.module`` is ``{_target_: pkg.Class, **arguments}`` (a class or a factory function,
built with Hydra's ``instantiate``, so nested ``_target_`` arguments work too). Arguments the
target's signature names but the config does not give are filled from the data:

- ``in_features``, ``n_features``: the columns of X;
- ``n_classes``, ``out_features``: the number of classes (``y.max() + 1``) when the targets are
  labels, else the columns of a 2-d real-valued y (1 for a 1-d y).

The module is built under ``torch.random.fork_rng`` seeded with ``objective.init_seed``, so the
same seed gives the same initial weights without touching the global generator.

``objective.loss`` is ``cross_entropy`` (labels; test accuracy reported), ``mse`` (real-valued
targets, (rows,) or (rows, k); test loss only) or ``{_target_: pkg.fn, **arguments}``: a
callable ``loss(output, target) -> scalar tensor`` (a class is instantiated with the arguments,
a function gets them bound by ``functools.partial``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from pipeline import ConfigError

LOSS_NAMES = ("cross_entropy", "mse")
FEATURE_ARGS = ("in_features", "n_features")
OUTPUT_ARGS = ("n_classes", "out_features")


def error_line(e: BaseException) -> str:
    """The innermost cause of an exception, as ``Type: first line``."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _plain(node: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, dict) else {}


def locate(target: Any, key: str) -> Any:
    """The object a ``_target_`` names (Hydra's ``get_object``, its own error log silenced: the
    error is the one line this raises)."""
    import logging

    from hydra.utils import get_object

    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{key} must name a class or function (pkg.module.Name), got {target!r}")
    log = logging.getLogger("hydra.utils")
    disabled, log.disabled = log.disabled, True
    try:
        return get_object(target)
    except Exception as e:  # any import-time failure of the user's code
        raise ConfigError(f"{key}={target} cannot be imported: {error_line(e)}") from None
    finally:
        log.disabled = disabled


def check(oc: Any) -> None:
    """What can be checked of ``objective.module`` and ``objective.loss`` without data: a
    ``_target_`` that imports, a loss that is a name or a ``_target_``."""
    module = _plain(oc.get("module"))
    if "_target_" not in module:
        raise ConfigError(
            "objective=torch_module needs objective.module._target_ (a torch.nn.Module class or "
            "a function returning one, e.g. objective.module._target_=torch.nn.Linear)"
        )
    locate(module["_target_"], "objective.module._target_")
    loss_fn(oc.get("loss"))


def loss_fn(loss: Any) -> Any:
    """A loss name as is, or the callable a ``{_target_: ...}`` loss config names."""
    from omegaconf import DictConfig

    if isinstance(loss, str) and loss in LOSS_NAMES:
        return loss
    spec = _plain(loss) if isinstance(loss, (dict, DictConfig)) else None
    if not spec or "_target_" not in spec:
        raise ConfigError(
            f"objective.loss must be one of {', '.join(LOSS_NAMES)} or a {{_target_: pkg.fn}} "
            f"naming a callable loss(output, target), got {loss!r}"
        )
    target = spec.pop("_target_")
    fn = locate(target, "objective.loss._target_")
    try:
        if isinstance(fn, type):
            fn = fn(**spec)
        elif spec:
            fn = functools.partial(fn, **spec)
    except Exception as e:
        raise ConfigError(f"objective.loss._target_={target} failed: {error_line(e)}") from None
    if not callable(fn):
        raise ConfigError(f"objective.loss._target_={target} is not callable")
    return fn


def labels(loss: Any, y_kind: str) -> bool:
    """Whether the targets are class labels: cross-entropy, or a user's loss on integer y."""
    return loss == "cross_entropy" or (not isinstance(loss, str) and y_kind in "biu")


def outputs(loss: Any, y) -> int:
    """What ``n_classes`` / ``out_features`` are filled with for targets ``y``."""
    import numpy as np

    y = np.asarray(y)
    if labels(loss, y.dtype.kind):
        return int(y.max()) + 1 if y.size else 2
    return int(y.shape[1]) if y.ndim == 2 else 1


def build_module(oc: Any, features: int, n_outputs: int, device: Any = None):
    """The user's module, seeded with ``objective.init_seed``, its data-shaped arguments filled;
    on ``device`` (e.g. "meta", which allocates nothing) when given."""
    import torch
    from hydra.utils import instantiate

    spec = _plain(oc.module)
    target = spec.get("_target_")
    cls = locate(target, "objective.module._target_")
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for names, value in ((FEATURE_ARGS, features), (OUTPUT_ARGS, n_outputs)):
        for name in names:
            if name in params and name not in spec:
                spec[name] = int(value)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(oc.init_seed))
            if device is None:
                module = instantiate(spec, _convert_="all")
            else:
                with torch.device(device):
                    module = instantiate(spec, _convert_="all")
    except Exception as e:
        raise ConfigError(
            f"objective.module._target_={target} could not be built: {error_line(e)}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"objective.module._target_={target} gave a {type(module).__name__}, "
            "not a torch.nn.Module"
        )
    if not any(True for _ in module.parameters()):
        raise ConfigError(f"objective.module._target_={target} has no parameters to train")
    return module


def build(oc: Any, arrays: dict, dtype, device, l2: float):
    """The :class:`~models.objectives.TorchModule` objective on checked data ``arrays``."""
    from models.objectives import TorchModule

    loss = loss_fn(oc.loss)
    X, y = arrays["X"], arrays["y"]
    module = build_module(oc, X.shape[1], outputs(loss, y))
    try:
        objective = TorchModule(module, X, y, arrays.get("X_test"), arrays.get("y_test"), l2=l2,
                                dtype=dtype, device=device, loss=loss)  # fmt: skip
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:  # one forward pass and loss on two rows: shapes that do not fit fail here, not mid-run
        rows = slice(0, 2)
        objective._objective(objective.initial_point(), objective.X[rows], objective.y[rows])
    except Exception as e:
        raise ConfigError(
            f"objective.module._target_={oc.module._target_} with objective.loss={oc.loss} "
            f"fails on the data (X has {X.shape[1]} columns, y shape {y.shape}): {error_line(e)}"
        ) from None
    return objective
