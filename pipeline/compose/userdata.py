"""Data from the user: ``dataset=npz`` (a file they give, ``dataset.path``) and
``dataset=callable`` (a function of theirs, ``dataset.factory._target_``, whose arrays are
written once to an ``.npz`` in the data folder; :mod:`pipeline.compose.datafiles` names that
file). Either way the run then reads an ``.npz`` like any built-in dataset's, through the same
checks (:mod:`pipeline.compose.inputs`), digests and MLflow dataset logging.

A factory returns a dict of arrays (``X``, ``y``, and optionally ``X_test``, ``y_test``,
``image_shape``) or a tuple ``(X, y)`` / ``(X, y, X_test, y_test)``; numpy arrays, torch
tensors or anything ``numpy.asarray`` takes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import ConfigError
from pipeline.compose.usermodel import error_line, locate

TUPLE_NAMES = ("X", "y", "X_test", "y_test")
KEY = "dataset.factory._target_"


def factory_spec(ds: Any) -> dict:
    """``dataset.factory`` as a plain dict."""
    from omegaconf import DictConfig, OmegaConf

    factory = ds.get("factory")
    if isinstance(factory, DictConfig):
        return OmegaConf.to_container(factory, resolve=True)
    return dict(factory or {})


def check(ds: Any) -> None:
    """What can be checked of a user's dataset without reading or building it."""
    spec = factory_spec(ds)
    if ds.name == "npz" and not ds.path:
        raise ConfigError("dataset=npz needs dataset.path=<file>.npz (arrays X and y)")
    if ds.name == "callable":
        if not spec.get("_target_"):
            raise ConfigError(
                f"dataset=callable needs {KEY}=<pkg.module.function> returning the arrays "
                "(X, y[, X_test, y_test])"
            )
        _import(spec["_target_"])
    elif spec:
        raise ConfigError(
            f"dataset.factory is for dataset=callable (this run has dataset={ds.name})"
        )


def file_stem(ds: Any) -> str:
    """``<function>-<digest>``: the name of the factory's data file, keyed by its target and
    arguments."""
    spec = factory_spec(ds)
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    name = str(spec.get("_target_", "callable")).rpartition(".")[2] or "callable"
    return f"{name}-{digest[:10]}"


def _import(target: str):
    fn = locate(target, KEY)
    if not callable(fn):
        raise ConfigError(f"{KEY}={target} is not callable")
    return fn


def arrays_of(result: Any, target: str) -> dict[str, np.ndarray]:
    """A factory's return value as named numeric arrays."""
    if isinstance(result, dict):
        items = dict(result)
    elif isinstance(result, (tuple, list)) and len(result) in (2, 4):
        items = dict(zip(TUPLE_NAMES, result, strict=False))
    else:
        raise ConfigError(
            f"{KEY}={target} returned a {type(result).__name__}; return a dict of arrays "
            "(X, y, ...) or a tuple (X, y) or (X, y, X_test, y_test)"
        )
    out = {}
    for name, value in items.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        try:
            a = np.asarray(value)
        except Exception as e:
            raise ConfigError(f"{KEY}={target}: {name} is not an array: {error_line(e)}") from None
        if a.dtype.kind not in "biuf":
            raise ConfigError(f"{KEY}={target}: {name} is not numeric (dtype {a.dtype})")
        out[str(name)] = a
    return out


def build(ds: Any, path: Path) -> Path:
    """Call the factory and write its arrays to ``path`` (atomically, byte-identical for the
    same arrays)."""
    from hydra.utils import instantiate

    from models.datasets import save_npz

    spec = factory_spec(ds)
    target = spec.get("_target_")
    _import(target)
    try:
        result = instantiate(spec, _convert_="all")
    except Exception as e:
        raise ConfigError(f"{KEY}={target} failed: {error_line(e)}") from None
    return save_npz(arrays_of(result, target), path)
